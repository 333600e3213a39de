"""Helpers shared by the benchmarks: processes to start, a streaming HTTP client, statistics."""

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KERNEL_PATH = "/api/kernel2/chat"
DIRECT_PATH = "/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "Tell me about artificial intelligence in a few words"}]
FIRST_CONTENT = re.compile(rb'"content": ?"[^"]')


def ms(seconds):
    return f"{seconds * 1000:8.2f} ms"


def body(model, **extra):
    """A streamed chat request for ``model`` (the test upstreams read their behaviour from it)."""
    return {"messages": MESSAGES, "model": model, "stream": True, **extra}


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout} s")


def start(args, env=None, port=None):
    """Start a process of this repository, quietly; wait for ``port`` if given."""
    process = subprocess.Popen(
        args,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    if port:
        wait_for_port(port)
    return process


def stop(process):
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def start_gunicorn(env):
    """Kernel Chat under gunicorn with one gevent worker; returns (process, base URL)."""
    port = free_port()
    env = {"KERNEL_BIND": f"127.0.0.1:{port}", "KERNEL_WORKERS": "1", "KERNEL_LOG_LEVEL": "warning", **env}
    process = start([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "app:app"], env, port)
    return process, f"http://127.0.0.1:{port}"


def worker_pids(master_pid, timeout=30.0):
    """The worker processes of a gunicorn master, once it has booted at least one."""
    path = Path(f"/proc/{master_pid}/task/{master_pid}/children")
    deadline = time.monotonic() + timeout
    while True:
        pids = [int(pid) for pid in path.read_text().split()] if path.exists() else []
        if pids or time.monotonic() > deadline:
            return pids
        time.sleep(0.05)


def cpu_seconds(pid):
    """User + system CPU time of a process so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def stream(url, path, body, timeout=60):
    """POST ``body`` and read the SSE answer as it arrives.

    Returns (seconds to the first content delta, seconds to the end, raw bytes).
    """
    host, port = url.split("//", 1)[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    payload = json.dumps(body)
    started = time.perf_counter()
    conn.request("POST", path, body=payload, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    if response.status != 200:
        raise RuntimeError(f"{path} answered {response.status}: {response.read()[:200]!r}")
    first = None
    received = []
    tail = b""  # the end of the previous block: a pattern may straddle two
    while block := response.read1(65536):
        received.append(block)
        if first is None:
            if FIRST_CONTENT.search(tail + block):
                first = time.perf_counter() - started
            tail = block[-32:]
    total = time.perf_counter() - started
    conn.close()
    return first, total, b"".join(received)


def concurrent_streams(url, path, request_body, count):
    """``count`` streams started at the same instant: summaries of the time to the first content delta and
    to the end, and how many streams completed (ended with ``[DONE]``)."""
    from gevent.pool import Pool

    outcomes = Pool(count).map(lambda _: stream(url, path, request_body), range(count))
    complete = sum(raw.endswith(b"data: [DONE]\n\n") for _, _, raw in outcomes)
    return summary([o[0] for o in outcomes]), summary([o[1] for o in outcomes]), complete


def sequential_streams(url, path, request_body, count, warm_up=10):
    """``count`` streams one after another (after ``warm_up`` unmeasured ones): summaries of the time to
    the first content delta and to the end."""
    for _ in range(warm_up):  # warm up connections and code paths
        stream(url, path, request_body)
    firsts, totals = [], []
    for _ in range(count):
        first, total, _ = stream(url, path, request_body)
        firsts.append(first)
        totals.append(total)
    return summary(firsts), summary(totals)


def percentile(values, fraction):
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def summary(values):
    return {"median": percentile(values, 0.5), "p99": percentile(values, 0.99)}
