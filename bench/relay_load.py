"""The relay under load, against several kinds of upstream server, direct and through Kernel Chat.

One run, one Kernel Chat gevent worker, everything on this machine:

1. Sequential streams against each kind of upstream (``bench/upstreams.py``: gevent's pywsgi and
   Werkzeug's development server write with Nagle on, uvicorn with it off; and llama-cpp-python's own
   server with the SmolLM2 model, if installed): time to the first content chunk, direct and relayed.
2. CPU per request: the worker's CPU time over 1,000 streamed requests of 20 tokens, beside the
   upstream's own and the ``echo`` backend's.
3. A burst of 1,000 streams started at once (a token every 50 ms, 40 tokens): time to first chunk.
4. 2,000 concurrent streams: errors, and a fresh worker's memory per open stream.
5. Throughput: 50 connections asking back to back for short streamed answers.

The ``echo`` backend, which answers without any upstream, is measured beside them (time to first chunk,
CPU, throughput): what the server itself costs before it relays anything.

Run with ``make bench`` or ``python -m bench.relay_load [--quick]``. Prints figures and ratios.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402
from gevent.pool import Pool  # noqa: E402

from bench.common import (  # noqa: E402
    DIRECT_PATH,
    KERNEL_PATH,
    body,
    cpu_seconds,
    free_port,
    ms,
    rss_mib,
    start,
    start_gunicorn,
    stop,
    stream,
    summary,
    wait_for_port,
    worker_pids,
)

KINDS = ("pywsgi", "werkzeug", "uvicorn", "llama.cpp")
# The echo backend answers these 20 words itself: Kernel Chat's own floor, with no upstream at all.
ECHO_BODY = {"messages": [{"role": "user", "content": " ".join(f"w{i}" for i in range(20))}], "stream": True}


class Setup:
    """An upstream of one kind and a Kernel Chat worker relaying to it."""

    def __init__(self, kind, data_dir, **kernel_env):
        self.kind = kind
        port = free_port()
        if kind == "llama.cpp":
            from kernel.backends.local import default_model_path

            args = [sys.executable, "-m", "llama_cpp.server", "--model", default_model_path(), "--port", str(port),
                    "--n_ctx", "1024", "--n_threads", "1"]
            self.upstream = start(args)
            wait_for_port(port, timeout=120)
        else:
            self.upstream = start([sys.executable, "-m", "bench.upstreams", kind, str(port)], port=port)
        self.url = f"http://127.0.0.1:{port}"
        env = {"KERNEL_BACKEND": "openai", "KERNEL_UPSTREAM_URL": self.url + "/v1", "KERNEL_DATA_DIR": data_dir,
               **kernel_env}
        self.kernel_process, self.kernel = start_gunicorn(env)
        (self.worker,) = worker_pids(self.kernel_process.pid)

    def paths(self):
        return {"direct": (self.url, DIRECT_PATH), "relayed": (self.kernel, KERNEL_PATH)}

    def stop(self):
        stop(self.kernel_process)
        stop(self.upstream)


def llama_available():
    try:
        import llama_cpp.server.app  # noqa: F401

        from kernel.backends.local import default_model_path

        return default_model_path() is not None
    except ImportError:
        return False


def sequential(setup, rounds):
    """Interleaved direct and relayed streams; the medians and p99 of time to first content chunk."""
    model_body = body("bench", max_tokens=16, temperature=0) if setup.kind == "llama.cpp" else body("20")
    firsts = {"direct": [], "relayed": []}
    for _ in range(5):
        for url, path in setup.paths().values():
            stream(url, path, model_body)
    for _ in range(rounds):
        for name, (url, path) in setup.paths().items():
            first, _, _ = stream(url, path, model_body)
            firsts[name].append(first)
    return {name: summary(values) for name, values in firsts.items()}


def cpu_per_request(setup, echo, count):
    """Worker CPU per relayed request, the upstream's own, and the echo backend's, in ms."""
    pool = Pool(10)
    for _ in range(50):
        stream(setup.kernel, KERNEL_PATH, body("20"))
    worker, upstream = cpu_seconds(setup.worker), cpu_seconds(setup.upstream.pid)
    list(pool.imap_unordered(lambda _: stream(setup.kernel, KERNEL_PATH, body("20")), range(count)))
    relayed = (cpu_seconds(setup.worker) - worker) / count * 1000
    own = (cpu_seconds(setup.upstream.pid) - upstream) / count * 1000
    for _ in range(50):
        stream(echo[1], KERNEL_PATH, ECHO_BODY)
    before = cpu_seconds(echo[2])
    list(pool.imap_unordered(lambda _: stream(echo[1], KERNEL_PATH, ECHO_BODY), range(count)))
    echoed = (cpu_seconds(echo[2]) - before) / count * 1000
    return relayed, own, echoed


def burst(setup, streams, model):
    """``streams`` streams started at the same instant; (first chunk summary, failures) per path."""
    results = {}
    for name, (url, path) in setup.paths().items():
        pool = Pool(streams)
        outcomes = pool.map(lambda _: _attempt(url, path, body(model)), range(streams))
        firsts = [o[0] for o in outcomes if o is not None]
        results[name] = (summary(firsts), streams - len(firsts))
        gevent.sleep(1)
    return results


def _attempt(url, path, request_body):
    try:
        first, total, raw = stream(url, path, request_body, timeout=120)
    except Exception:  # a failed stream is counted, whatever failed
        return None
    return (first, total) if raw.endswith(b"data: [DONE]\n\n") and first is not None else None


def concurrent_memory(setup, streams, model, hold_s):
    """``streams`` open at once through the worker: (failures, MiB before, MiB while open, KiB per stream)."""
    idle = rss_mib(setup.worker)
    pool = Pool(streams)
    greenlets = [pool.spawn(_attempt, setup.kernel, KERNEL_PATH, body(model)) for _ in range(streams)]
    gevent.sleep(hold_s)
    loaded = rss_mib(setup.worker)
    gevent.joinall(greenlets)
    failures = sum(g.value is None for g in greenlets)
    return failures, idle, loaded, (loaded - idle) * 1024 / streams


def echo_floor(setup, echo_url, rounds):
    """Time to first chunk of the echo backend (no upstream) beside the upstream's own, interleaved."""
    firsts = {"direct": [], "echo": []}
    for _ in range(rounds):
        firsts["direct"].append(stream(setup.url, DIRECT_PATH, body("20"))[0])
        firsts["echo"].append(stream(echo_url, KERNEL_PATH, ECHO_BODY)[0])
    return {name: summary(values) for name, values in firsts.items()}


def throughput(setup, connections, seconds, echo_url):
    rates = {}
    paths = {**setup.paths(), "echo": (echo_url, KERNEL_PATH)}
    for name, (url, path) in paths.items():
        deadline = time.perf_counter() + seconds
        counts = []
        request_body = ECHO_BODY if name == "echo" else body("20")

        def client():
            done = 0
            while time.perf_counter() < deadline:
                stream(url, path, request_body)
                done += 1
            counts.append(done)

        started = time.perf_counter()
        gevent.joinall([gevent.spawn(client) for _ in range(connections)])
        rates[name] = sum(counts) / (time.perf_counter() - started)
    return rates


def open_file_limit(pid):
    for line in open(f"/proc/{pid}/limits"):
        if line.startswith("Max open files"):
            return int(line.split()[3])
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer requests, for a smoke run")
    args = parser.parse_args()
    rounds, cpu_count, burst_n, open_n, seconds = (40, 200, 200, 400, 2) if args.quick else (200, 1000, 1000, 2000, 5)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    connections = str(max(4000, open_n * 2))
    print(f"Kernel Chat relay under load: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}; one gevent worker, KERNEL_WORKER_CONNECTIONS={connections}")

    data = tempfile.TemporaryDirectory()
    rows = []
    kinds = [k for k in KINDS if k != "llama.cpp" or llama_available()]
    for kind in kinds:
        setup = Setup(kind, data.name)
        try:
            rows.append((kind, sequential(setup, 25 if kind == "llama.cpp" else rounds)))
        finally:
            setup.stop()
    print("\n1. Time to first content chunk, sequential streams, interleaved (median / p99)")
    print(f"{'upstream':12}{'direct':>22}{'Kernel Chat':>24}{'added (median)':>17}")
    for kind, result in rows:
        d, r = result["direct"], result["relayed"]
        print(f"{kind:12}{ms(d['median']):>11} /{ms(d['p99']):>10}{ms(r['median']):>12} /{ms(r['p99']):>10}"
              f"{ms(r['median'] - d['median']):>17}")

    setup = Setup("pywsgi", data.name, KERNEL_WORKER_CONNECTIONS=connections)
    echo_process, echo_url = start_gunicorn({"KERNEL_BACKEND": "echo", "KERNEL_DATA_DIR": data.name})
    try:
        echo = (echo_process, echo_url, worker_pids(echo_process.pid)[0])
        floor = echo_floor(setup, echo_url, rounds)
        print(f"Kernel Chat's floor, the echo backend with no upstream: first chunk p50 {ms(floor['echo']['median'])}"
              f" against the pywsgi upstream's {ms(floor['direct']['median'])}, interleaved "
              f"(+{(floor['echo']['median'] - floor['direct']['median']) * 1000:.2f} ms)")

        relayed, own, echoed = cpu_per_request(setup, echo, cpu_count)
        print(f"\n2. CPU per streamed request of 20 tokens, over {cpu_count} requests")
        print(f"Kernel Chat worker relaying: {relayed:.2f} ms; the upstream producing it: {own:.2f} ms; "
              f"Kernel Chat's echo backend: {echoed:.2f} ms")

        results = burst(setup, burst_n, "40:0.05")
        print(f"\n3. A burst of {burst_n} streams at once (40 tokens, 50 ms apart): time to first chunk")
        for name, (first, failed) in results.items():
            print(f"{name:8} p50 {ms(first['median']):>10}  p99 {ms(first['p99']):>10}  failed {failed}")
        print(f"ratio relayed/direct (p50): {results['relayed'][0]['median'] / results['direct'][0]['median']:.2f}")

        # A fresh worker: one that has served the burst above keeps that heap and would under-count.
        fresh = Setup("pywsgi", data.name, KERNEL_WORKER_CONNECTIONS=connections)
        try:
            for _ in range(20):
                stream(fresh.kernel, KERNEL_PATH, body("20"))
            failures, idle, loaded, per_stream = concurrent_memory(fresh, open_n, "10:0.5", 3.5)
            limit = open_file_limit(fresh.worker)
        finally:
            fresh.stop()
        print(f"\n4. {open_n} concurrent streams through one fresh worker (open-file limit {limit}): {failures} "
              f"failed; worker memory {idle:.1f} MiB idle, {loaded:.1f} MiB with all open: {per_stream:.1f} KiB "
              f"per stream")

        rates = throughput(setup, 50, seconds, echo_url)
        print(f"\n5. 50 connections, back to back, {seconds} s: direct {rates['direct']:.0f} requests/s, "
              f"Kernel Chat {rates['relayed']:.0f} requests/s (ratio {rates['relayed'] / rates['direct']:.2f}); "
              f"Kernel Chat's echo backend, no upstream: {rates['echo']:.0f} requests/s "
              f"(ratio {rates['echo'] / rates['direct']:.2f})")
    finally:
        setup.stop()
        if echo_process.poll() is None:
            stop(echo_process)
        data.cleanup()


if __name__ == "__main__":
    main()
