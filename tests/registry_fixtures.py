"""Helpers for the registry's integration tests: a registry server, connector processes, waiting for status."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT, Server, spawn

ADMIN_KEY = "registry-test-admin-key"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
# Short keep-alives so that "offline within about 30 s" can be checked in about 2 s.
REGISTRY_ENV = {
    "KERNEL_BACKEND": "echo",
    "KERNEL_ADMIN_KEY": ADMIN_KEY,
    "KERNEL_PROBE_INTERVAL_S": "0.5",
    "KERNEL_TUNNEL_PING_S": "0.5",
    "KERNEL_TUNNEL_TIMEOUT_S": "2",
    "KERNEL_SSE_PING_S": "0.3",
    "KERNEL_UPSTREAM_TIMEOUT_S": "10",
    "KERNEL_TUNNEL_MAX_MESSAGE_BYTES": "65536",
}


class PortServer(Server):
    """A :class:`Server` on a given port (``KERNEL_BIND``), so a restarted registry keeps its address."""

    def __init__(self, env, log_path, port=None):
        self.fixed_port = port
        super().__init__(env, log_path)

    def _wait_until_up(self, timeout=30.0):
        if self.fixed_port is not None:
            self.port = self.fixed_port
            self.url = f"http://127.0.0.1:{self.port}"
        super()._wait_until_up(timeout)


def start_registry(tmp_path, port=None, **env):
    data_dir = tmp_path / "registry-data"
    data_dir.mkdir(exist_ok=True)
    full_env = {**REGISTRY_ENV, "KERNEL_DATA_DIR": str(data_dir), **{k: str(v) for k, v in env.items()}}
    if port is not None:
        full_env["KERNEL_BIND"] = f"127.0.0.1:{port}"
    log_path = tmp_path / f"registry-{time.monotonic_ns()}.log"
    return PortServer(full_env, log_path, port)


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """One registry for a test module; tests register instances of their own on it."""
    server = start_registry(tmp_path_factory.mktemp("registry"))
    yield server
    server.stop()


def register(registry, **fields):
    fields.setdefault("name", "test instance")
    response = requests.post(registry.url + "/api/instances", json=fields, headers=ADMIN, timeout=10)
    assert response.status_code == 201, response.text
    return response.json()


def instance_status(registry, instance_id):
    response = requests.get(f"{registry.url}/api/instances/{instance_id}", headers=ADMIN, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["status"]


def wait_status(registry, instance_id, status, timeout=15.0):
    """Seconds it took until the instance had ``status``; fails the test after ``timeout``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if instance_status(registry, instance_id) == status:
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"instance {instance_id} not {status} after {timeout} s:\n{registry.log()[-3000:]}")


class Connector:
    """``flask --app app connect`` in a subprocess, logging to a file."""

    def __init__(self, registry_url, instance, target, log_path, extra=()):
        self.log_path = Path(log_path)
        self._log = open(self.log_path, "ab")
        env = {k: v for k, v in os.environ.items() if not k.startswith("KERNEL_")}
        # The secret travels in the environment, as the docs advise; the connector needs no model.
        env.update({"KERNEL_INSTANCE_SECRET": instance["instance_secret"], "KERNEL_BACKEND": "echo",
                    "KERNEL_DATA_DIR": str(self.log_path.parent / "connector-data")})
        self.process = spawn(
            [sys.executable, "-m", "flask", "--app", "app", "connect", "--registry", registry_url,
             "--instance-id", instance["instance_id"], "--target", target, "--max-backoff", "1", *extra],
            cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
        )

    def log(self):
        return self.log_path.read_text(errors="replace")

    def signal(self, signum):
        os.kill(self.process.pid, signum)

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self._log.close()
