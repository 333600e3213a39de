"""Kernel Chat behind nginx with deploy/nginx.conf, under load; and what the request log costs.

One run, everything on this machine: gevent's pywsgi upstream (``bench/upstreams.py``), one Kernel Chat
gevent worker relaying to it, nginx (one process, ``deploy/nginx.conf`` as it is but for its ports) in
front of that worker, and the clients, in this process.

1. A burst of 1,000 streams started at once (40 tokens, 50 ms apart), direct to Kernel Chat and through
   nginx, twice (each order once): failures (target 0), time to first content chunk p50/p99.
2. 2,000 short streamed answers (20 tokens) asked back to back by 50 connections, direct to Kernel Chat
   and through nginx: requests/s, and the CPU time per request of the worker and of nginx (from /proc;
   less skewed by other load on the machine than requests/s).
3. The request log's cost: the same with ``KERNEL_LOG_LEVEL=warning`` (no request log) and ``info`` (one
   line per request, to a file), three runs each, alternated, each on a fresh server.
4. The request log line alone, timed in this process: what part 3 measures, without the noise.

Run with ``python -m bench.nginx [--quick]`` (needs nginx: ``apt-get install nginx-light``). Prints figures.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402

from bench.common import ROOT, cpu_seconds, free_port, start, stop, stream, wait_for_port, worker_pids  # noqa: E402
from bench.relay_load import KERNEL_PATH, _attempt, body, burst, ms  # noqa: E402

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
SITE = ROOT / "deploy" / "nginx.conf"


def site(upstream_port, listen_port):
    """deploy/nginx.conf for these ports; nothing else changed."""
    text = SITE.read_text()
    for old, new in (("server 127.0.0.1:8002;", f"server 127.0.0.1:{upstream_port};"),
                     ("listen 80;", f"listen 127.0.0.1:{listen_port};"), ("listen [::]:80;", "")):
        if text.count(old) != 1:
            raise SystemExit(f"deploy/nginx.conf no longer has exactly one {old!r}")
        text = text.replace(old, new)
    return text


def start_nginx(upstream_port, workdir):
    """nginx in one process with room for 4,000 connections; returns (process, base URL)."""
    port = free_port()
    temp = "".join(f"{name}_temp_path {workdir}/{name};\n" for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf = Path(workdir) / "nginx.conf"
    conf.write_text(
        f"daemon off;\nmaster_process off;\npid {workdir}/nginx.pid;\nerror_log {workdir}/error.log;\n"
        f"worker_rlimit_nofile 16384;\nevents {{ worker_connections 8192; }}\n"
        f"http {{\naccess_log off;\n{temp}{site(upstream_port, port)}\n}}\n"
    )
    process = start([NGINX, "-c", str(conf), "-p", str(workdir)], port=port)
    return process, f"http://127.0.0.1:{port}"


class Stack:
    """The pywsgi upstream, one Kernel Chat worker relaying to it, nginx in front."""

    def __init__(self, workdir, **kernel_env):
        upstream_port = free_port()
        self.upstream = start([sys.executable, "-m", "bench.upstreams", "pywsgi", str(upstream_port)], port=upstream_port)
        self.kernel_port = free_port()
        self.kernel = f"http://127.0.0.1:{self.kernel_port}"
        self.log_path = Path(workdir) / f"kernel-{self.kernel_port}.log"
        env = {**os.environ, "KERNEL_BIND": f"127.0.0.1:{self.kernel_port}", "KERNEL_WORKERS": "1",
               "KERNEL_BACKEND": "openai", "KERNEL_UPSTREAM_URL": f"http://127.0.0.1:{upstream_port}/v1",
               "KERNEL_DATA_DIR": str(workdir), "KERNEL_TRUSTED_PROXIES": "1", "KERNEL_LOG_LEVEL": "warning",
               **kernel_env}
        with open(self.log_path, "wb") as log:  # the server's log goes to a file, as to journald
            self.kernel_process = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "app:app"],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for_port(self.kernel_port)
        deadline = time.monotonic() + 30
        while not worker_pids(self.kernel_process.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        (self.worker,) = worker_pids(self.kernel_process.pid)
        self.nginx_process, self.proxied = start_nginx(self.kernel_port, workdir)
        self.order = ("direct", "nginx")

    def paths(self):  # the names ``burst`` reports under, in the order it runs them
        paths = {"direct": (self.kernel, KERNEL_PATH), "nginx": (self.proxied, KERNEL_PATH)}
        return {name: paths[name] for name in self.order}

    def log_lines(self):
        return sum(1 for line in self.log_path.read_text(errors="replace").splitlines() if KERNEL_PATH in line)

    def stop(self):
        stop(self.nginx_process)
        stop(self.kernel_process)
        stop(self.upstream)


def load(url, connections, count, model="20"):
    """``count`` streamed requests from ``connections`` clients asking back to back: (requests/s, failures)."""
    remaining = [count]
    failed = [0]

    def client():
        while remaining[0] > 0:
            remaining[0] -= 1
            try:
                _, _, raw = stream(url, KERNEL_PATH, body(model))
                failed[0] += not raw.endswith(b"data: [DONE]\n\n")
            except Exception:  # counted, whatever failed
                failed[0] += 1

    started = time.perf_counter()
    gevent.joinall([gevent.spawn(client) for _ in range(connections)])
    return count / (time.perf_counter() - started), failed[0]


def measured_load(url, count, pids):
    """``load`` with the CPU time each of ``pids`` spent per request, in ms."""
    before = [cpu_seconds(pid) for pid in pids]
    rate, failed = load(url, 50, count)
    return rate, failed, [(cpu_seconds(pid) - b) / count * 1000 for pid, b in zip(pids, before)]


def log_line_cost(workdir, fmt, level, lines=20000):
    """Microseconds one request's log line costs, written as gunicorn writes it (a stream handler, its format)."""
    import logging

    from kernel import requestlog

    log = logging.getLogger("kernel.access")
    saved = log.handlers, log.level, log.propagate
    with open(Path(workdir) / f"access-{fmt}.log", "w") as out:
        handler = logging.StreamHandler(out)
        handler.setFormatter(logging.Formatter(r"%(asctime)s [%(process)d] [%(levelname)s] %(message)s",
                                               r"[%Y-%m-%d %H:%M:%S %z]"))
        log.handlers, log.propagate = [handler], False
        log.setLevel(level)
        request_log = requestlog.RequestLog(None, fmt)
        stream_state = type("Stream", (), {"end": "done"})()
        environ = {"REQUEST_METHOD": "POST", requestlog.ROUTE: KERNEL_PATH, requestlog.BACKEND: "openai",
                   requestlog.STREAM: stream_state, "REMOTE_ADDR": "203.0.113.9",
                   requestlog.REQUEST_ID: "req_" + "0" * 32}
        started = time.perf_counter()
        for _ in range(lines):
            request_log.emit(environ, ["200 OK"], 1.0, 1.01, 2310, 1.4)
        elapsed = time.perf_counter() - started
    log.handlers, log.level, log.propagate = saved
    return elapsed / lines * 1e6


def warm(url, count=100):
    for _ in range(count):
        _attempt(url, KERNEL_PATH, body("20"))


def has_metrics(url):
    try:
        with urllib.request.urlopen(url + "/metrics", timeout=5) as response:
            return response.status == 200
    except Exception:
        return False


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer streams, shorter runs, for a smoke run")
    args = parser.parse_args()
    streams, count, rounds = (200, 300, 1) if args.quick else (1000, 2000, 3)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    nginx_version = subprocess.run([NGINX, "-v"], capture_output=True, text=True).stderr.strip()
    print(f"Kernel Chat behind nginx: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, {nginx_version}; one gevent worker, deploy/nginx.conf")

    workdir = tempfile.TemporaryDirectory()
    stack = Stack(workdir.name, KERNEL_WORKER_CONNECTIONS="4000")
    try:
        print(f"/metrics: {'served' if has_metrics(stack.kernel) else 'not served'} by this checkout")
        warm(stack.kernel)
        warm(stack.proxied)
        print(f"\n1. A burst of {streams} streams at once (40 tokens, 50 ms apart): time to first chunk; "
              f"twice, in both orders")
        for order in (("direct", "nginx"), ("nginx", "direct")):
            stack.order = order
            results = burst(stack, streams, "40:0.05")
            for name, (first, failed) in results.items():
                print(f"{name:8} p50 {ms(first['median']):>10}  p99 {ms(first['p99']):>10}  failed {failed}")
            print(f"added by nginx (p50): {ms(results['nginx'][0]['median'] - results['direct'][0]['median'])}")

        print(f"\n2. 50 connections, back to back, {count} requests of 20 tokens: rate, and CPU per request")
        for name, (url, _) in stack.paths().items():
            pids = [stack.worker] + ([stack.nginx_process.pid] if name == "nginx" else [])
            rate, failed, cpu = measured_load(url, count, pids)
            extra = f", nginx {cpu[1]:.2f} ms" if name == "nginx" else ""
            print(f"{name:8} {rate:7.0f} requests/s  failed {failed}  CPU: Kernel Chat worker {cpu[0]:.2f} ms{extra}")
    finally:
        stack.stop()

    print(f"\n3. The request log: 50 connections direct to Kernel Chat, {count} requests each run, alternated")
    runs = {"warning": [], "info": []}
    for _ in range(rounds):
        for level in runs:
            stack = Stack(workdir.name, KERNEL_LOG_LEVEL=level)
            try:
                warm(stack.kernel)
                before = stack.log_lines()
                rate, failed, (cpu,) = measured_load(stack.kernel, count, [stack.worker])
                time.sleep(0.5)
                lines = stack.log_lines() - before
            finally:
                stack.stop()
            runs[level].append((rate, cpu))
            print(f"KERNEL_LOG_LEVEL={level:8} {rate:7.0f} requests/s  worker CPU {cpu:.3f} ms/request  failed {failed}"
                  f"  request-log lines {lines}")
    (off_rate, off_cpu), (on_rate, on_cpu) = (
        [sum(values) / len(values) for values in zip(*runs[level])] for level in ("warning", "info"))
    print(f"mean: log off {off_rate:.0f} requests/s, {off_cpu:.3f} ms CPU; log on {on_rate:.0f} requests/s, "
          f"{on_cpu:.3f} ms CPU: the log costs {(on_cpu / off_cpu - 1) * 100:.1f} % of the worker's CPU per request, "
          f"{(1 - on_rate / off_rate) * 100:.1f} % of requests/s")

    print("\n4. The request log line alone, written 20,000 times as gunicorn writes it (stream handler, its format)")
    import logging

    for fmt, level in (("text", logging.WARNING), ("text", logging.INFO), ("json", logging.INFO)):
        cost = log_line_cost(workdir.name, fmt, level)
        print(f"KERNEL_LOG_FORMAT={fmt:4} level {logging.getLevelName(level):7}: {cost:6.1f} µs per request, "
              f"{cost / 10 / off_cpu:.1f} % of the worker's CPU per request ({off_cpu:.3f} ms, part 3)")
    workdir.cleanup()


if __name__ == "__main__":
    main()
