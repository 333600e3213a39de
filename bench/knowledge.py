"""L0 knowledge: ingestion throughput and retrieval latency over a large index.

Builds a synthetic corpus (word frequencies follow Zipf's law, as in real text) in a fresh SQLite
store, then measures in one run:

* ingestion (chunking, storing, FTS5 indexing) in MB/s, against storing the same bytes unindexed;
* retrieval (``knowledge.search``, top 3 by BM25) p50/p99 over the whole index, against a ``LIKE``
  scan for the same words, which is what a store without a full-text index would do.

Run with ``python -m bench.knowledge [--chunks N]`` (default 100,000 chunks).
"""

import argparse
import hashlib
import resource
import random
import tempfile
import time
from pathlib import Path

from bench.common import summary
from kernel import store
from kernel.store import knowledge

CHUNK_CHARS = 1000


def vocabulary(rng, size=30000):
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = set()
    while len(words) < size:
        words.add("".join(rng.choice(letters) for _ in range(rng.randint(3, 10))))
    return sorted(words)


def corpus(rng, words, documents, document_chars):
    cumulative, total = [], 0.0
    for rank in range(len(words)):
        total += 1 / (rank + 1)
        cumulative.append(total)
    for number in range(documents):
        paragraphs, length = [], 0
        while length < document_chars:
            sentences = []
            for _ in range(rng.randint(3, 6)):
                sentence = " ".join(rng.choices(words, cum_weights=cumulative, k=rng.randint(8, 20)))
                sentences.append(sentence.capitalize() + ".")
            paragraph = " ".join(sentences)
            paragraphs.append(paragraph)
            length += len(paragraph) + 2
        yield f"Document {number}", "\n\n".join(paragraphs)


def questions(rng, words, count):
    # People ask with a few content words among common ones; draw the content words from the
    # middle of the frequency range, where words say something about the topic.
    middle = words[100:5000]
    for _ in range(count):
        picked = rng.sample(middle, 3)
        yield f"What do my notes say about {picked[0]} and the {picked[1]} of {picked[2]}?"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=100_000, help="approximate number of chunks to index")
    parser.add_argument("--queries", type=int, default=1000)
    args = parser.parse_args()

    rng = random.Random(7)
    words = vocabulary(rng)
    document_chars = 20_000
    documents = list(corpus(rng, words, max(1, args.chunks * 950 // document_chars), document_chars))
    total_bytes = sum(len(content.encode()) for _, content in documents)

    with tempfile.TemporaryDirectory() as directory:
        conn = store.connect(str(Path(directory) / store.DB_NAME))
        store.migrate(conn)

        # Baseline: the same bytes stored as plain rows, no chunking, no index.
        conn.execute("CREATE TABLE plain (sha TEXT, title TEXT, content TEXT)")
        started = time.perf_counter()
        for title, content in documents:
            with store.write(conn):
                conn.execute("INSERT INTO plain VALUES (?, ?, ?)",
                             (hashlib.sha256(content.encode()).hexdigest(), title, content))
        plain_s = time.perf_counter() - started
        conn.execute("DROP TABLE plain")

        started = time.perf_counter()
        for title, content in documents:
            knowledge.add(conn, title, content, chunk_chars=CHUNK_CHARS)
        ingest_s = time.perf_counter() - started
        chunks = conn.execute("SELECT count(*) FROM chunks").fetchone()[0]
        size_mb = total_bytes / 1e6

        print(f"Kernel Chat knowledge benchmark: {len(documents):,} documents, {size_mb:.1f} MB, "
              f"{chunks:,} chunks of up to {CHUNK_CHARS} characters")
        print("\nIngestion (one transaction per document)")
        print(f"plain rows, no index : {size_mb / plain_s:7.1f} MB/s")
        print(f"chunked + FTS5 index : {size_mb / ingest_s:7.1f} MB/s  "
              f"({ingest_s:.1f} s; {plain_s / ingest_s:.2f}x the plain rate)")

        asked = list(questions(rng, words, args.queries))
        for question in asked[:20]:  # warm the page cache
            knowledge.search(conn, question)
        latencies, found = [], 0
        for question in asked:
            started = time.perf_counter()
            passages = knowledge.search(conn, question, top_k=3)
            latencies.append(time.perf_counter() - started)
            found += bool(passages)
        fts = summary(latencies)

        # Baseline: what a store without a full-text index does, for a few of the same questions.
        scans = []
        for question in asked[:5]:
            terms = knowledge.match_expression(question).replace('"', "").split(" OR ")
            condition = " OR ".join("content LIKE ?" for _ in terms)
            started = time.perf_counter()
            conn.execute(f"SELECT chunk_id FROM chunks WHERE {condition} LIMIT 3", [f"%{t}%" for t in terms]).fetchall()
            conn.execute(f"SELECT count(*) FROM chunks WHERE {condition}", [f"%{t}%" for t in terms]).fetchone()
            scans.append(time.perf_counter() - started)
        scan = summary(scans)

        print(f"\nRetrieval, top 3 by BM25, {len(asked)} questions ({found} with passages found)")
        print(f"FTS5 search  : p50 {fts['median'] * 1000:7.2f} ms   p99 {fts['p99'] * 1000:7.2f} ms")
        print(f"LIKE scan    : p50 {scan['median'] * 1000:7.2f} ms   (5 questions; matching and counting hits)")
        print(f"ratio scan / FTS5 at p50: {scan['median'] / fts['median']:.0f}x")
        print(f"\nindex on disk: {sum(f.stat().st_size for f in Path(directory).iterdir()) / 1e6:.0f} MB; "
              f"peak resident memory of this process: "
              f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
        print(f"\ntargets: retrieval p50 < 5 ms: {'met' if fts['median'] < 0.005 else 'NOT met'} "
              f"({fts['median'] * 1000:.2f} ms); ingestion > 5 MB/s: "
              f"{'met' if size_mb / ingest_s > 5 else 'NOT met'} ({size_mb / ingest_s:.1f} MB/s)")
        conn.close()


if __name__ == "__main__":
    main()
