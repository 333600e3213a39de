"""The nginx configuration in docs/deployment.md, run for real in front of the server.

Skipped where nginx is not installed (``apt-get install nginx-light``).
"""

import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT, free_port, spawn

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
pytestmark = pytest.mark.skipif(NGINX is None, reason="nginx is not installed")


def documented_config():
    text = (ROOT / "docs" / "deployment.md").read_text()
    return re.search(r"```nginx\n(.*?)```", text, re.S).group(1)


@pytest.fixture(scope="module")
def proxied(server, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("nginx")
    port = free_port()
    site = documented_config()
    site = site.replace("server 127.0.0.1:8002;", f"server 127.0.0.1:{server.port};")
    site = site.replace("listen 80;", f"listen 127.0.0.1:{port};")
    (workdir / "nginx.conf").write_text(
        f"daemon off;\nmaster_process off;\npid {workdir}/nginx.pid;\nerror_log {workdir}/error.log;\nevents {{}}\n"
        f"http {{\naccess_log off;\n{site}\n}}\n"
    )
    process = spawn([NGINX, "-c", str(workdir / "nginx.conf"), "-p", str(workdir)])
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            requests.get(url + "/healthz", timeout=1)
            break
        except requests.ConnectionError:
            time.sleep(0.1)
    yield url
    process.terminate()
    process.wait(timeout=10)


def test_deltas_pass_through_nginx_as_they_come(proxied):
    started = time.monotonic()
    response = requests.post(
        proxied + "/api/kernel2/chat",
        json={"messages": [{"role": "user", "content": "hi"}], "model": "slow:4:0.4"},
        stream=True,
        timeout=30,
    )
    arrivals = [time.monotonic() - started for line in response.iter_lines(chunk_size=None) if b'"content":"t' in line]
    assert len(arrivals) == 4
    assert arrivals[0] < 0.8  # not held back until the end (1.6 s)
    assert arrivals[-1] - arrivals[0] > 1.0


def test_pings_reach_the_client_through_nginx(proxied):
    response = requests.post(
        proxied + "/api/kernel2/chat",
        json={"messages": [{"role": "user", "content": "hi"}], "model": "stall:1.2"},
        stream=True,
        timeout=30,
    )
    raw = b"".join(response.iter_content(chunk_size=None))
    assert b": ping\n\n" in raw
    assert raw.endswith(b"data: [DONE]\n\n")
