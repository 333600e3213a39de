"""The embedded local model: time to first token, tokens per second, memory, and the server's
responsiveness while it generates.

Starts Kernel Chat under gunicorn (one gevent worker) on the local model (SmolLM2-135M by default,
``KERNEL_LOCAL_MODEL_PATH`` for another), then measures in one run:

* sequential streamed answers: time to the first token and decoding speed;
* ``GET /healthz`` latency with the worker idle (baseline) and while the model generates;
* the worker's resident memory before and after loading traffic.

Run with ``python -m bench.local``.
"""

import json
import tempfile
import threading
import time

import requests

from bench.common import rss_mib, start_gunicorn, stop, stream, summary, worker_pids

QUESTIONS = [
    "Tell me about artificial intelligence.",
    "Hello, who are you?",
    "Give me three tips for a good night's sleep.",
    "What is the capital of France?",
    "Write a short poem about the sea.",
]


def health_latencies(url, seconds, stop_event=None):
    session = requests.Session()
    latencies = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not (stop_event and stop_event.is_set()):
        started = time.perf_counter()
        session.get(url + "/healthz", timeout=5)
        latencies.append(time.perf_counter() - started)
        time.sleep(0.01)
    return latencies


def main():
    data_dir = tempfile.TemporaryDirectory()
    process, url = start_gunicorn({"KERNEL_DATA_DIR": data_dir.name})
    try:
        (worker,) = worker_pids(process.pid)
        model = requests.get(url + "/v1/models", timeout=30).json()["data"][0]["id"]  # the worker has booted
        loaded_rss = rss_mib(worker)
        print(f"Kernel Chat local model benchmark: {model}, 1 gevent worker (pid {worker})")
        print(f"worker resident memory, model loaded, before any request: {loaded_rss:.0f} MiB "
              f"(the weights are memory-mapped and paged in on first use)")

        firsts, rates, tokens_total = [], [], 0
        for round_ in range(3):
            for question in QUESTIONS:
                body = {"messages": [{"role": "user", "content": question}], "max_tokens": 128,
                        "stream_options": {"include_usage": True}, "seed": round_}
                first, total, raw = stream(url, "/api/kernel2/chat", body)
                usage = json.loads(raw.split(b'"usage":')[1].split(b"}")[0] + b"}")
                tokens = usage["completion_tokens"]
                tokens_total += tokens
                firsts.append(first)
                if tokens > 1:
                    rates.append((tokens - 1) / (total - first))
        print(f"\n{len(firsts)} streamed answers (up to 128 tokens), {tokens_total} tokens in all")
        f, r = summary(firsts), summary(rates)
        print(f"time to first token : p50 {f['median'] * 1000:7.1f} ms   p99 {f['p99'] * 1000:7.1f} ms")
        print(f"decoding speed      : p50 {r['median']:7.1f} tokens/s   (slowest {min(rates):.1f})")

        idle = health_latencies(url, 2.0)
        busy_done = threading.Event()

        def generate():
            body = {"messages": [{"role": "user", "content": QUESTIONS[0]}], "max_tokens": 400, "stream": False,
                    "temperature": 0.7}
            requests.post(url + "/api/kernel2/chat", json=body, timeout=120)
            busy_done.set()

        threading.Thread(target=generate).start()
        time.sleep(0.2)
        busy = health_latencies(url, 30.0, busy_done)
        busy_done.wait(120)
        i, b = summary(idle), summary(busy)
        print(f"\n/healthz while idle      : p50 {i['median'] * 1000:6.2f} ms   p99 {i['p99'] * 1000:6.2f} ms   "
              f"max {max(idle) * 1000:6.2f} ms  ({len(idle)} probes)")
        print(f"/healthz while generating: p50 {b['median'] * 1000:6.2f} ms   p99 {b['p99'] * 1000:6.2f} ms   "
              f"max {max(busy) * 1000:6.2f} ms  ({len(busy)} probes)")
        print(f"ratio busy/idle at p50: {b['median'] / i['median']:.2f}")
        print(f"\nworker resident memory after the run: {rss_mib(worker):.0f} MiB")
        print(f"\ntarget: /healthz within 50 ms while generating: {'met' if max(busy) < 0.05 else 'NOT met'} "
              f"(max {max(busy) * 1000:.1f} ms)")
    finally:
        stop(process)
        data_dir.cleanup()


if __name__ == "__main__":
    main()
