"""Servers the tests start die with the test process, however it dies.

A crash of pytest (a segfault, SIGKILL) skips every teardown; the servers it started must not be left
holding ports and memory on the machine.
"""

import os
import subprocess
import sys
import time

from tests.conftest import ROOT

SCRIPT = """
import os, signal, sys
from pathlib import Path
from tests.conftest import Server
server = Server({"KERNEL_BACKEND": "echo", "KERNEL_DATA_DIR": sys.argv[1]}, Path(sys.argv[1]) / "log")
master = server.process.pid
workers = open(f"/proc/{master}/task/{master}/children").read().split()
print(master, *workers, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(") ", 1)[1][0] != "Z"


def test_a_killed_test_process_takes_its_servers_with_it(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    child = subprocess.run([sys.executable, "-c", SCRIPT, str(data)], cwd=ROOT, capture_output=True, text=True,
                           timeout=60)
    assert child.returncode == -9, child.stderr
    master, *workers = map(int, child.stdout.split())
    assert workers  # gunicorn had booted its worker
    deadline = time.monotonic() + 15
    while any(map(alive, [master, *workers])) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(master)
    assert not any(map(alive, workers)), "workers outlived their master"
