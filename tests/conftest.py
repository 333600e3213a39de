import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from kernel import create_app
from tests.upstream import Upstream

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def app(tmp_path):
    return create_app({"KERNEL_BACKEND": "echo", "KERNEL_DATA_DIR": str(tmp_path / "data")})


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def admin(app):
    """Headers carrying the app's admin key."""
    return {"Authorization": f"Bearer {app.extensions['kernel.admin_key']}"}


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture(scope="session")
def upstream():
    server = Upstream().start()
    yield server
    server.stop()


PR_SET_PDEATHSIG = 1


def die_with_parent():
    """``preexec_fn`` for servers the tests start: the kernel kills the child when the test process dies,
    however it dies (a crash or SIGKILL skips every teardown). gunicorn's workers leave on their own
    when their master is gone."""
    os.setsid()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def spawn(args, **kwargs):
    """``subprocess.Popen`` for a server the tests start: in its own process group, dying with the tests."""
    return subprocess.Popen(args, preexec_fn=die_with_parent, **kwargs)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """Kernel Chat under gunicorn with gevent workers, in a subprocess, as it is deployed."""

    def __init__(self, env, log_path, python=sys.executable):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.data_dir = Path(env["KERNEL_DATA_DIR"])
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("KERNEL_")}
        full_env.update({"KERNEL_BIND": f"127.0.0.1:{self.port}", **env})
        self._log = open(log_path, "wb")
        self.process = spawn(
            [python, "-m", "gunicorn", "-c", "gunicorn.conf.py", "app:app"],
            cwd=ROOT,
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._wait_until_up()

    def _wait_until_up(self, timeout=30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}:\n{self.log()}")
            try:
                if requests.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except (requests.ConnectionError, requests.Timeout):  # not listening yet, or slow to boot under load
                time.sleep(0.1)
        raise RuntimeError(f"gunicorn did not come up in {timeout} s:\n{self.log()}")

    def log(self):
        return Path(self.log_path).read_text(errors="replace")

    def post(self, path, body, **kwargs):
        headers = {"Content-Type": "application/json", **kwargs.pop("headers", {})}
        return requests.post(self.url + path, data=json.dumps(body), headers=headers,
                             timeout=kwargs.pop("timeout", 30), **kwargs)

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


@pytest.fixture(scope="session")
def start_server(tmp_path_factory):
    """Start a server with the given ``KERNEL_*`` environment; all are stopped at the end of the session."""
    servers = []

    def start(**env):
        log_path = tmp_path_factory.mktemp("server") / "gunicorn.log"
        env.setdefault("KERNEL_DATA_DIR", str(log_path.parent / "data"))
        server = Server({k: str(v) for k, v in env.items()}, log_path)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def server(start_server, upstream):
    """The server relaying to the test upstream, with short pings so waits are visible in tests."""
    return start_server(
        KERNEL_BACKEND="openai",
        KERNEL_UPSTREAM_URL=upstream.url,
        KERNEL_SSE_PING_S=0.3,
        KERNEL_UPSTREAM_TIMEOUT_S=5,
    )


def sse_events(response):
    """The ``data:`` payloads of an SSE response (``requests`` with ``stream=True``), parsed as they come."""
    events = []
    for line in response.iter_lines(chunk_size=None):
        if line.startswith(b"data: "):
            payload = line[6:]
            events.append("[DONE]" if payload == b"[DONE]" else json.loads(payload))
    return events


# -- a skipped test is a failure where every dependency is meant to be installed (CI) --------------------

STRICT_SKIPS = "KERNEL_TEST_NO_SKIPS"


def pytest_terminal_summary(terminalreporter):
    skipped = len(terminalreporter.stats.get("skipped", []))
    terminalreporter.write_line(f"skipped tests: {skipped}")
    if skipped and os.environ.get(STRICT_SKIPS):
        terminalreporter.write_line(f"{STRICT_SKIPS} is set: a skipped test fails the run", red=True)


def pytest_sessionfinish(session, exitstatus):
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if skipped and os.environ.get(STRICT_SKIPS) and session.exitstatus == 0:
        session.exitstatus = 1
