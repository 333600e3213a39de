"""Relay overhead: the same streams read directly from an upstream and through Kernel Chat.

Starts the test upstream (tests/upstream.py) and Kernel Chat under gunicorn with one gevent worker in
front of it, then measures in one run:

* sequential requests: time to the first content delta and to the end of the stream;
* one long stream: chunks per second, direct and relayed, and the worker's CPU time per chunk;
* 100 concurrent streams: time to first delta and to the end, and the aggregate chunk rate.

Run with ``make bench`` (or ``python -m bench.relay [--quick]``). Prints figures and ratios.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402

from bench.common import (  # noqa: E402
    DIRECT_PATH,
    KERNEL_PATH,
    body,
    concurrent_streams,
    cpu_seconds,
    free_port,
    ms,
    rss_mib,
    sequential_streams,
    start,
    start_gunicorn,
    stop,
    stream,
    worker_pids,
)



def sequential(upstream, kernel, count):
    rows = {}
    for name, (url, path) in {"direct": (upstream, DIRECT_PATH), "relayed": (kernel, KERNEL_PATH)}.items():
        rows[name] = sequential_streams(url, path, body("echo"), count)
    print(f"\nSequential, {count} requests of a 10-word answer")
    print(f"{'':10}{'first delta p50':>18}{'p99':>12}{'whole p50':>14}{'p99':>12}")
    for name, (first, total) in rows.items():
        print(f"{name:10}{ms(first['median']):>18}{ms(first['p99']):>12}{ms(total['median']):>14}{ms(total['p99']):>12}")
    added = rows["relayed"][0]["median"] - rows["direct"][0]["median"]
    print(f"added time to first delta (median): {added * 1000:.2f} ms; "
          f"ratio relayed/direct: {rows['relayed'][0]['median'] / rows['direct'][0]['median']:.2f}")
    return added


def long_stream(upstream, kernel, worker, chunks):
    model = f"fast:{chunks}"
    stream(upstream, DIRECT_PATH, body("fast:100"))
    _, direct, raw = stream(upstream, DIRECT_PATH, body(model))
    assert raw.count(b'"content":"x"') == chunks
    cpu_before = cpu_seconds(worker)
    _, relayed, raw = stream(kernel, KERNEL_PATH, body(model))
    cpu = cpu_seconds(worker) - cpu_before
    assert raw.count(b'"content":"x"') == chunks, "relayed stream lost chunks"
    print(f"\nOne stream of {chunks} deltas")
    print(f"direct : {direct:.3f} s = {chunks / direct:10,.0f} chunks/s")
    print(f"relayed: {relayed:.3f} s = {chunks / relayed:10,.0f} chunks/s "
          f"(ratio {relayed / direct:.2f}); worker CPU {cpu * 1e6 / chunks:.1f} us/chunk "
          f"= {chunks / cpu if cpu else float('inf'):,.0f} chunks per CPU-second")
    return chunks / cpu if cpu else float("inf")


def concurrent(upstream, kernel, worker, streams, deltas):
    model = f"slow:{deltas}:0.005"
    results = {}
    for name, (url, path) in {"direct": (upstream, DIRECT_PATH), "relayed": (kernel, KERNEL_PATH)}.items():
        cpu_before = cpu_seconds(worker)
        first, total, complete = concurrent_streams(url, path, body(model), streams)
        results[name] = (first, total, complete, cpu_seconds(worker) - cpu_before)
    print(f"\n{streams} concurrent streams of {deltas} deltas, 5 ms apart")
    print(f"{'':10}{'first delta p50':>18}{'p99':>12}{'whole p50':>14}{'p99':>12}{'complete':>10}")
    for name, (first, total, complete, _) in results.items():
        print(f"{name:10}{ms(first['median']):>18}{ms(first['p99']):>12}{ms(total['median']):>14}"
              f"{ms(total['p99']):>12}{complete:>10}")
    d, r = results["direct"], results["relayed"]
    print(f"added first delta (median): {(r[0]['median'] - d[0]['median']) * 1000:.2f} ms; "
          f"whole stream ratio relayed/direct (median): {r[1]['median'] / d[1]['median']:.2f}; "
          f"worker CPU for the relayed batch: {r[3]:.2f} s")


def throughput(upstream, kernel, connections, seconds):
    """Requests per second with ``connections`` clients asking back to back for short answers."""
    rates = {}
    for name, (url, path) in {"direct": (upstream, DIRECT_PATH), "relayed": (kernel, KERNEL_PATH)}.items():
        deadline = time.perf_counter() + seconds
        counts = []

        def client():
            done = 0
            while time.perf_counter() < deadline:
                stream(url, path, body("echo"))
                done += 1
            counts.append(done)

        started = time.perf_counter()
        gevent.joinall([gevent.spawn(client) for _ in range(connections)])
        rates[name] = sum(counts) / (time.perf_counter() - started)
    print(f"\n{connections} connections asking back to back for {seconds} s (10-word streamed answers)")
    print(f"direct : {rates['direct']:8.0f} requests/s")
    print(f"relayed: {rates['relayed']:8.0f} requests/s (ratio {rates['relayed'] / rates['direct']:.2f})")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer requests, for a smoke run")
    args = parser.parse_args()
    count, chunks, streams = (50, 5000, 20) if args.quick else (300, 20000, 100)

    port = free_port()
    upstream_process = start([sys.executable, "-m", "tests.upstream", str(port)], port=port)
    upstream = f"http://127.0.0.1:{port}"
    data_dir = tempfile.TemporaryDirectory()
    kernel_process, kernel = start_gunicorn(
        {"KERNEL_BACKEND": "openai", "KERNEL_UPSTREAM_URL": upstream + "/v1", "KERNEL_DATA_DIR": data_dir.name}
    )
    try:
        (worker,) = worker_pids(kernel_process.pid)
        print(f"Kernel Chat relay benchmark: 1 gevent worker (pid {worker}), upstream = tests/upstream.py")
        added = sequential(upstream, kernel, count)
        rate = long_stream(upstream, kernel, worker, chunks)
        concurrent(upstream, kernel, worker, streams, 50)
        throughput(upstream, kernel, 50, 3 if args.quick else 10)
        print(f"\nworker resident memory after the run: {rss_mib(worker):.1f} MiB")
        print(f"\ntargets: added median first delta < 2 ms: {'met' if added < 0.002 else 'NOT met'} "
              f"({added * 1000:.2f} ms); relay >= 10,000 chunks/s per worker CPU-second: "
              f"{'met' if rate >= 10000 else 'NOT met'} ({rate:,.0f})")
    finally:
        stop(kernel_process)
        stop(upstream_process)
        data_dir.cleanup()


if __name__ == "__main__":
    main()
