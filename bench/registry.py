"""Registry overhead: the same chats straight to a kernel and through the registry, direct and tunnelled.

Starts the test upstream (tests/upstream.py), a kernel relaying to it, a registry, and a connector
(``flask --app app connect``) between the registry and the kernel, each under gunicorn with one gevent
worker (the connector is a plain process). Then, in one run:

* sequential chats: time to the first content delta and to the end of the stream, for the kernel itself
  (``/api/kernel2/chat``), the registry's own echo backend (``reg-echo``: what one request to the
  registry costs, with no relaying), a direct instance (the registry calls the kernel's ``/v1``) and a tunnel
  instance (the registry -> WebSocket -> connector -> the kernel's ``/api/kernel2/chat``);
* 100 concurrent chats of 50 deltas each, the same three ways.

Run with ``python -m bench.registry [--quick]``. Prints figures and ratios.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402

from bench.common import (  # noqa: E402
    body,
    concurrent_streams,
    free_port,
    ms,
    sequential_streams,
    start,
    start_gunicorn,
    stop,
)

ADMIN_KEY = "bench-admin-key"


def api(url, path, payload=None, method=None):
    request = urllib.request.Request(url + path, data=json.dumps(payload).encode() if payload is not None else None,
                                     method=method, headers={"Authorization": f"Bearer {ADMIN_KEY}",
                                                             "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def wait_online(registry, instance_id, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if api(registry, f"/api/instances/{instance_id}")["status"] == "online":
            return
        time.sleep(0.1)
    raise RuntimeError(f"instance {instance_id} did not come online in {timeout} s")


def sequential(routes, count):
    rows = {}
    for name, (url, path) in routes.items():
        rows[name] = sequential_streams(url, path, body("echo"), count)
    print(f"\nSequential, {count} chats of a 10-word answer")
    print(f"{'':10}{'first delta p50':>18}{'p99':>12}{'whole p50':>14}{'p99':>12}{'added p50':>12}")
    base = rows["kernel"][0]["median"]
    for name, (first, total) in rows.items():
        print(f"{name:10}{ms(first['median']):>18}{ms(first['p99']):>12}{ms(total['median']):>14}"
              f"{ms(total['p99']):>12}{ms(first['median'] - base):>12}")
    return {name: rows[name][0]["median"] - base for name in rows}


def concurrent(routes, streams, deltas):
    model = f"slow:{deltas}:0.005"
    results = {}
    for name, (url, path) in routes.items():
        started = time.perf_counter()
        first, total, complete = concurrent_streams(url, path, body(model), streams)
        results[name] = (first, total, complete, time.perf_counter() - started)
    print(f"\n{streams} concurrent chats of {deltas} deltas, 5 ms apart")
    print(f"{'':10}{'first delta p50':>18}{'p99':>12}{'whole p50':>14}{'p99':>12}{'complete':>10}{'wall':>12}")
    for name, (first, total, complete, wall) in results.items():
        print(f"{name:10}{ms(first['median']):>18}{ms(first['p99']):>12}{ms(total['median']):>14}"
              f"{ms(total['p99']):>12}{complete:>10}{ms(wall):>12}")
    base = results["kernel"][1]["median"]
    print("whole-stream ratio to the kernel (median): "
          + ", ".join(f"{name} {results[name][1]['median'] / base:.2f}" for name in results if name != "kernel"))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer chats, for a smoke run")
    args = parser.parse_args()
    count, streams = (50, 20) if args.quick else (300, 100)

    processes = []
    dirs = [tempfile.TemporaryDirectory() for _ in range(3)]
    try:
        port = free_port()
        processes.append(start([sys.executable, "-m", "tests.upstream", str(port)], port=port))
        kernel_process, kernel = start_gunicorn({"KERNEL_BACKEND": "openai", "KERNEL_DATA_DIR": dirs[0].name,
                                                 "KERNEL_UPSTREAM_URL": f"http://127.0.0.1:{port}/v1"})
        processes.append(kernel_process)
        registry_process, registry = start_gunicorn({"KERNEL_BACKEND": "echo", "KERNEL_DATA_DIR": dirs[1].name,
                                                     "KERNEL_ADMIN_KEY": ADMIN_KEY, "KERNEL_PROBE_INTERVAL_S": "1"})
        processes.append(registry_process)
        direct = api(registry, "/api/instances", {"name": "direct", "endpoint": kernel + "/v1"})
        tunnel = api(registry, "/api/instances", {"name": "tunnel"})
        processes.append(start(
            [sys.executable, "-m", "flask", "--app", "app", "connect", "--registry", registry,
             "--instance-id", tunnel["instance_id"], "--target", kernel],
            env={"KERNEL_INSTANCE_SECRET": tunnel["instance_secret"], "KERNEL_BACKEND": "echo",
                 "KERNEL_DATA_DIR": dirs[2].name},
        ))
        wait_online(registry, direct["instance_id"])
        wait_online(registry, tunnel["instance_id"])
        routes = {
            "kernel": (kernel, "/api/kernel2/chat"),
            "reg-echo": (registry, "/api/kernel2/chat"),
            "direct": (registry, f"/api/chat/{direct['instance_id']}"),
            "tunnel": (registry, f"/api/chat/{tunnel['instance_id']}"),
        }
        print("Kernel Chat registry benchmark: kernel and registry each 1 gevent worker (1000 connections), "
              f"open-file limit {resource.getrlimit(resource.RLIMIT_NOFILE)[0]}; upstream = tests/upstream.py")
        added = sequential(routes, count)
        concurrent(routes, streams, 50)
        print(f"\ntarget: added median first delta through the tunnel < 2 ms: "
              f"{'met' if added['tunnel'] < 0.002 else 'NOT met'} ({added['tunnel'] * 1000:.2f} ms)")
    finally:
        for process in reversed(processes):
            stop(process)
        for directory in dirs:
            directory.cleanup()


if __name__ == "__main__":
    main()
