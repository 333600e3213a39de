"""L0 knowledge: documents cut into chunks, indexed with SQLite FTS5, retrieved with BM25.

Chunks follow paragraph and then sentence boundaries up to a size in characters, and each chunk begins
with the end of the previous one (the overlap) so a passage cut in two is still found whole.
"""

import hashlib
import re
import sqlite3
import uuid
from typing import NamedTuple

from . import Invalid, NotFound, now, write

_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n\s*")
_SENTENCE_END = re.compile(r"(?<=[.!?;:。！？；])\s+")
_WORD = re.compile(r"\w+")

# Words too common to say anything about what a question is after.
STOPWORDS = frozenset(
    """
    a about above after again against all am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has have
    having he her here hers herself him himself his how i if in into is it its itself just know let me
    more most my myself no nor not now of off on once only or other our ours ourselves out over own
    please same she should so some such tell than that the their theirs them themselves then there these
    they this those through to too under until up very was we were what when where which while who whom
    why will with would you your yours yourself yourselves
    """.split()
)
MAX_QUERY_TERMS = 32


class Unit(NamedTuple):
    text: str
    separator: str  # what joins it to the unit before it


class Passage(NamedTuple):
    document_id: str
    title: str
    content: str
    score: float


# -- chunking ----------------------------------------------------------------------------------------


def _pieces(text, size):
    """Split an over-long sentence at whitespace (and a word longer than ``size`` anywhere)."""
    piece = ""
    for word in text.split():
        while len(word) > size:
            if piece:
                yield piece
                piece = ""
            yield word[:size]
            word = word[size:]
        if piece and len(piece) + 1 + len(word) > size:
            yield piece
            piece = word
        else:
            piece = f"{piece} {word}" if piece else word
    if piece:
        yield piece


def units(text, size):
    """The sentences of each paragraph (the first marked as starting one); over-long ones cut at spaces.

    Chunks are packed from these, so every cut falls at the end of a sentence or a paragraph, and the
    overlap is made of whole sentences.
    """
    for paragraph in _PARAGRAPH_BREAK.split(text):
        paragraph = paragraph.strip()
        if not paragraph:
            continue
        separator = "\n\n"
        for sentence in _SENTENCE_END.split(paragraph):
            for piece in _pieces(sentence, size) if len(sentence) > size else [sentence.strip()]:
                if piece:
                    yield Unit(piece, separator)
                    separator = " "


def chunk_text(text, size=1000, overlap=None):
    """Cut ``text`` into chunks of at most ``size`` characters; ``overlap`` defaults to ``size // 7``."""
    overlap = size // 7 if overlap is None else overlap
    chunks, current, length = [], [], 0

    def joined(parts):
        return "".join((unit.separator if i else "") + unit.text for i, unit in enumerate(parts))

    for unit in units(text, size):
        if current and length + len(unit.separator) + len(unit.text) > size:
            chunks.append(joined(current))
            carried = []
            for previous in reversed(current):
                if len(joined([previous, *carried])) > overlap:
                    break
                carried.insert(0, previous)
            length = len(joined(carried))
            if carried and length + len(unit.separator) + len(unit.text) > size:
                carried, length = [], 0
            current = carried
        length += (len(unit.separator) if current else 0) + len(unit.text)
        current.append(unit)
    if current:
        chunks.append(joined(current))
    return chunks


# -- documents ---------------------------------------------------------------------------------------

_SUMMARY = "document_id, title, source, sha256, size_bytes, chunk_count, created_at"


def add(conn, title, content, source=None, chunk_chars=1000):
    """Store and index a document. Returns ``(document, created)``; identical content is stored once."""
    data = content.encode("utf-8")
    digest = hashlib.sha256(data).hexdigest()
    existing = _by_digest(conn, digest)
    if existing is not None:
        return existing, False
    chunks = chunk_text(content, chunk_chars)
    if not chunks:
        raise Invalid("the document has no text")
    document_id = str(uuid.uuid4())
    try:
        with write(conn):
            conn.execute(
                "INSERT INTO documents (document_id, title, source, sha256, size_bytes, chunk_count, content,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (document_id, title, source, digest, len(data), len(chunks), content, now()),
            )
            conn.executemany(
                "INSERT INTO chunks (document_id, seq, content) VALUES (?, ?, ?)",
                [(document_id, seq, chunk) for seq, chunk in enumerate(chunks)],
            )
    except sqlite3.IntegrityError:  # the same content, added by another writer a moment ago
        existing = _by_digest(conn, digest)
        if existing is None:
            raise
        return existing, False
    return get(conn, document_id, with_content=False), True


def _by_digest(conn, digest):
    row = conn.execute(f"SELECT {_SUMMARY} FROM documents WHERE sha256 = ?", (digest,)).fetchone()
    return dict(row) if row else None


def get(conn, document_id, with_content=True):
    columns = _SUMMARY + (", content" if with_content else "")
    row = conn.execute(f"SELECT {columns} FROM documents WHERE document_id = ?", (document_id,)).fetchone()
    if row is None:
        raise NotFound(f"no document with id {document_id!r}")
    return dict(row)


def page(conn, limit, offset):
    """One page of documents, in the order they were added, and the total count."""
    rows = conn.execute(
        f"SELECT {_SUMMARY} FROM documents ORDER BY rowid LIMIT ? OFFSET ?", (limit, offset)
    )
    total = conn.execute("SELECT count(*) FROM documents").fetchone()[0]
    return [dict(r) for r in rows], total


def delete(conn, document_id):
    """Remove a document; its chunks leave the index with it."""
    with write(conn):
        cursor = conn.execute("DELETE FROM documents WHERE document_id = ?", (document_id,))
    if cursor.rowcount == 0:
        raise NotFound(f"no document with id {document_id!r}")


# -- retrieval ---------------------------------------------------------------------------------------


def match_expression(text):
    """An FTS5 query for any user text: its distinctive words, each quoted, joined with OR.

    Quoting every term means nothing the user types (quotes, ``*``, ``-``, ``NEAR``, ``OR``, brackets)
    is read as FTS5 syntax. Returns ``""`` when no word is left to search for.
    """
    terms = []
    for word in _WORD.findall(text.lower()):
        if len(word) > 1 and word not in STOPWORDS and word not in terms:
            terms.append(word)
            if len(terms) == MAX_QUERY_TERMS:
                break
    return " OR ".join(f'"{term}"' for term in terms)


def search(conn, text, top_k=3):
    """The ``top_k`` passages that best match ``text`` by BM25, best first."""
    expression = match_expression(text)
    if not expression:
        return []
    rows = conn.execute(
        """
        SELECT c.document_id, d.title, c.content, hits.rank
        FROM (SELECT rowid, rank FROM chunks_fts WHERE chunks_fts MATCH ? ORDER BY rank LIMIT ?) AS hits
        JOIN chunks AS c ON c.chunk_id = hits.rowid
        JOIN documents AS d ON d.document_id = c.document_id
        ORDER BY hits.rank
        """,
        (expression, top_k),
    )
    return [Passage(r[0], r[1], r[2], r[3]) for r in rows]
