"""The deployment files in deploy/, run for real: nginx (deploy/nginx.conf) in front of gunicorn, and the
systemd unit (deploy/kernel-chat.service) checked by ``systemd-analyze verify`` and against gunicorn.conf.py.

The nginx tests need nginx (``apt-get install nginx-light``), the unit's check ``systemd-analyze``
(``apt-get install systemd``); each is skipped where its program is missing, and CI installs both.
"""

import http.client
import re
import runpy
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import requests

from kernel import config as settings
from tests.conftest import ROOT, free_port, spawn
from tests.registry_fixtures import ADMIN, Connector, register, start_registry, wait_status

DEPLOY = ROOT / "deploy"
NGINX_CONF = DEPLOY / "nginx.conf"
UNIT = DEPLOY / "kernel-chat.service"
ENV_FILE = DEPLOY / "kernel-chat.env"
DOC = ROOT / "docs" / "deployment.md"

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_nginx = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (apt-get install nginx-light)")
needs_systemd = pytest.mark.skipif(SYSTEMD_ANALYZE is None,
                                   reason="systemd-analyze is not installed (apt-get install systemd)")

# Where deploy/ puts things; the tests put their own there.
DEPLOYED_CHECKOUT = "/opt/kernel-chat"
CLIENT_ADDRESS = "127.0.0.2"  # a loopback address other than nginx's own, so the two can be told apart


# -- the files, read ----------------------------------------------------------------------------------------

def unit_settings():
    """The unit's ``(section, key, value)`` lines, in order (keys such as Environment= repeat)."""
    entries, section = [], None
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        entries.append((section, key.strip(), value.strip()))
    return entries


def unit_value(key):
    values = [value for _, k, value in unit_settings() if k == key]
    assert len(values) == 1, f"{UNIT.name}: expected one {key}=, found {values}"
    return values[0]


def unit_environment():
    env = {}
    for _, key, value in unit_settings():
        if key == "Environment":
            name, _, val = value.partition("=")
            env[name] = val
    return env


def deploy_env():
    """The unit's application settings that a test server should share (not its address or data dir)."""
    return {k: v for k, v in unit_environment().items()
            if k.startswith("KERNEL_") and k not in ("KERNEL_BIND", "KERNEL_DATA_DIR")}


def seconds(value):
    match = re.fullmatch(r"(\d+)(s|min|m)?", value)
    assert match, f"not a simple duration: {value!r}"
    return int(match.group(1)) * (60 if match.group(2) in ("min", "m") else 1)


def replace_once(text, old, new):
    assert text.count(old) == 1, f"deploy/nginx.conf no longer has exactly one {old!r}: update this test"
    return text.replace(old, new)


def site(upstream_port, listen_port, read_timeout=None, tunnel_read_timeout=None):
    """deploy/nginx.conf as it is, but for the test's ports (and, where asked, shorter read timeouts)."""
    text = NGINX_CONF.read_text()
    text = replace_once(text, "server 127.0.0.1:8002;", f"server 127.0.0.1:{upstream_port};")
    text = replace_once(text, "listen 80;", f"listen 127.0.0.1:{listen_port};")
    text = replace_once(text, "listen [::]:80;", "")
    if read_timeout is not None:
        text = replace_once(text, "proxy_read_timeout 300s;", f"proxy_read_timeout {read_timeout};")
    if tunnel_read_timeout is not None:
        text = replace_once(text, "proxy_read_timeout 3600s;", f"proxy_read_timeout {tunnel_read_timeout};")
    return text


def main_config(workdir, site_text):
    """An nginx.conf around a site block: one process in the foreground, everything in ``workdir``."""
    temp = "".join(f"{name}_temp_path {workdir}/{name};\n" for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return (
        f"daemon off;\nmaster_process off;\npid {workdir}/nginx.pid;\nerror_log {workdir}/error.log;\n"
        f"events {{ worker_connections 1024; }}\n"
        f"http {{\naccess_log off;\n{temp}{site_text}\n}}\n"
    )


class Nginx:
    """nginx with a site block, as one process that dies with the tests."""

    def __init__(self, site_text, workdir):
        self.workdir = Path(workdir)
        self.port = int(re.search(r"listen 127\.0\.0\.1:(\d+);", site_text).group(1))
        self.url = f"http://127.0.0.1:{self.port}"
        conf = self.workdir / "nginx.conf"
        conf.write_text(main_config(self.workdir, site_text))
        self.process = spawn([NGINX, "-c", str(conf), "-p", str(self.workdir)], stderr=subprocess.STDOUT,
                             stdout=open(self.workdir / "stdout.log", "wb"))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.process.returncode}:\n{self.log()}")
            try:
                http.client.HTTPConnection("127.0.0.1", self.port, timeout=1).connect()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"nginx did not come up:\n{self.log()}")

    def log(self):
        return "".join(p.read_text(errors="replace") for p in (self.workdir / "error.log", self.workdir / "stdout.log")
                       if p.exists())

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def nginx(tmp_path_factory):
    """Start nginx with ``site(...)`` arguments; all are stopped at the end of the module."""
    started = []

    def start(upstream_port, **timeouts):
        proxy = Nginx(site(upstream_port, free_port(), **timeouts), tmp_path_factory.mktemp("nginx"))
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


@pytest.fixture(scope="module")
def kernel(start_server, upstream):
    """Kernel Chat relaying to the test upstream, with the unit's settings and pings every 0.5 s."""
    return start_server(KERNEL_BACKEND="openai", KERNEL_UPSTREAM_URL=upstream.url, KERNEL_SSE_PING_S=0.5,
                        KERNEL_UPSTREAM_TIMEOUT_S=30, **deploy_env())


@pytest.fixture(scope="module")
def proxied(kernel, nginx):
    return nginx(kernel.port).url


def chat(url, model, **kwargs):
    return requests.post(url + "/api/kernel2/chat", json={"messages": [{"role": "user", "content": "hi"}], "model": model},
                         stream=True, timeout=kwargs.pop("timeout", 30), **kwargs)


# -- the docs -----------------------------------------------------------------------------------------------

def test_the_docs_point_to_the_deploy_files_and_copy_none():
    doc = DOC.read_text()
    for path in ("deploy/nginx.conf", "deploy/kernel-chat.service", "deploy/kernel-chat.env"):
        assert f"]({'../' + path})" in doc, f"docs/deployment.md does not link {path}"
    # A snippet the doc shows must be the file's own text, so the two cannot drift.
    config = NGINX_CONF.read_text()
    for block in re.findall(r"```nginx\n(.*?)```", doc, re.S):
        assert block.strip() in config, f"docs/deployment.md shows nginx lines that deploy/nginx.conf lacks:\n{block}"
    unit = UNIT.read_text()
    for block in re.findall(r"```ini\n(.*?)```", doc, re.S):
        assert block.strip() in unit, f"docs/deployment.md shows unit lines that deploy/kernel-chat.service lacks:\n{block}"


# -- nginx --------------------------------------------------------------------------------------------------

@needs_nginx
def test_nginx_accepts_the_config_as_it_is(tmp_path):
    conf = tmp_path / "nginx.conf"
    conf.write_text(main_config(tmp_path, NGINX_CONF.read_text()))
    result = subprocess.run([NGINX, "-t", "-c", str(conf), "-p", str(tmp_path)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "[warn]" not in result.stderr and "[emerg]" not in result.stderr, result.stderr


@needs_nginx
def test_deltas_pass_through_nginx_as_they_come(proxied):
    started = time.monotonic()
    response = chat(proxied, "slow:4:0.4")
    arrivals = [time.monotonic() - started for line in response.iter_lines(chunk_size=None) if b'"content":"t' in line]
    assert len(arrivals) == 4
    assert arrivals[0] < 0.8  # not held back until the end (1.6 s)
    assert arrivals[-1] - arrivals[0] > 1.0
    assert "gzip" not in response.headers.get("Content-Encoding", "")


@needs_nginx
def test_a_gzip_accepting_client_still_gets_the_stream_as_it_comes(proxied):
    started = time.monotonic()
    response = chat(proxied, "slow:3:0.4", headers={"Accept-Encoding": "gzip"})
    first = next(line for line in response.iter_lines(chunk_size=None) if b'"content":"t' in line)
    assert first and time.monotonic() - started < 0.8
    assert "Content-Encoding" not in response.headers


@needs_nginx
def test_pings_reach_the_client_through_nginx(proxied):
    raw = b"".join(chat(proxied, "stall:1.2").iter_content(chunk_size=None))
    assert b": ping\n\n" in raw
    assert raw.endswith(b"data: [DONE]\n\n")


@needs_nginx
def test_a_stream_outlives_nginx_read_timeout_thanks_to_pings(kernel, start_server, upstream, nginx):
    """Deltas 2.5 s apart behind a 2 s proxy_read_timeout: pings every 0.5 s keep the stream; without them, it is cut."""
    model = "slow:2:2.5"  # 5 s in all, never a delta within 2 s
    proxy = nginx(kernel.port, read_timeout="2s")
    started = time.monotonic()
    raw = b"".join(chat(proxy.url, model).iter_content(chunk_size=None))
    assert time.monotonic() - started > 4.5
    assert raw.count(b'"content":"t') == 2 and raw.count(b": ping") >= 4
    assert raw.endswith(b"data: [DONE]\n\n")

    quiet = start_server(KERNEL_BACKEND="openai", KERNEL_UPSTREAM_URL=upstream.url, KERNEL_SSE_PING_S=60,
                         KERNEL_UPSTREAM_TIMEOUT_S=30, **deploy_env())
    proxy = nginx(quiet.port, read_timeout="2s")
    started = time.monotonic()
    response = chat(proxy.url, model)
    assert response.status_code == 504 and time.monotonic() - started < 4
    assert response.json()["error"]["code"] == "gateway_timeout"  # nginx's answer, in the server's envelope


@needs_nginx
def test_the_client_address_reaches_the_app_from_x_forwarded_for(kernel, proxied):
    """nginx appends the address it sees; the server (KERNEL_TRUSTED_PROXIES=1, as the unit sets) logs that one,
    never what the client wrote in X-Forwarded-For itself."""
    assert deploy_env().get("KERNEL_TRUSTED_PROXIES") == "1"
    request_id = "deploy-" + uuid.uuid4().hex
    host, port = proxied.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10, source_address=(CLIENT_ADDRESS, 0))
    conn.request("GET", "/healthz", headers={"X-Forwarded-For": "203.0.113.9", "X-Request-ID": request_id})
    response = conn.getresponse()
    response.read()
    conn.close()
    assert response.status == 200 and response.getheader("X-Request-ID") == request_id
    deadline = time.monotonic() + 5
    while not (lines := [line for line in kernel.log().splitlines() if f"id={request_id}" in line]):
        assert time.monotonic() < deadline, kernel.log()[-2000:]
        time.sleep(0.05)
    assert f"client={CLIENT_ADDRESS} " in lines[0] + " " and "203.0.113.9" not in lines[0], lines[0]


@needs_nginx
def test_the_clients_host_reaches_the_server(proxied):
    """nginx passes the Host the client asked for (not the upstream's name), so the server's allow-list applies."""
    refused = requests.get(proxied + "/v1/models", headers={"Host": "rebound.example"}, timeout=10)
    assert refused.status_code == 403 and "KERNEL_ALLOWED_HOSTS" in refused.json()["message"]
    assert requests.get(proxied + "/healthz", headers={"Host": "localhost"}, timeout=10).status_code == 200


@needs_nginx
def test_nginx_gives_requests_without_an_id_one(proxied):
    response = requests.get(proxied + "/healthz", timeout=10)
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-ID"])  # nginx's $request_id


@needs_nginx
def test_the_body_limit_is_the_servers(proxied):
    limit = settings.SETTINGS["KERNEL_MAX_BODY_BYTES"][0]
    assert re.search(r"client_max_body_size (\d+)m;", NGINX_CONF.read_text()).group(1) == str(limit // (1 << 20))
    headers = {"Content-Type": "application/json"}
    at_limit = requests.post(proxied + "/api/kernel2/chat", data=b" " * (limit - 2) + b"{}", headers=headers, timeout=30)
    assert at_limit.status_code == 400, at_limit.text  # through nginx, to the server: no messages
    over = requests.post(proxied + "/api/kernel2/chat", data=b" " * (limit - 1) + b"{}", headers=headers, timeout=30)
    assert over.status_code == 413
    assert over.json()["error"]["code"] == "payload_too_large" and over.json()["code"] == 413


@needs_nginx
def test_a_stopped_server_is_a_502_envelope_with_retry_after(nginx):
    proxy = nginx(free_port())  # nothing listens there
    response = requests.post(proxy.url + "/v1/chat/completions", json={"messages": []}, timeout=10)
    assert response.status_code == 502 and response.headers["Retry-After"] == "5"
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["error"]["type"] == "server_error"


@needs_nginx
def test_the_tunnel_websocket_through_nginx(kernel, nginx, tmp_path):
    """A connector reaches the registry through nginx; the tunnel outlives a 2 s proxy_read_timeout on the
    registry's pings (0.5 s here) and carries a chat."""
    registry = start_registry(tmp_path, **deploy_env())
    connector = proxy = None
    try:
        proxy = nginx(registry.port, tunnel_read_timeout="2s")
        instance = register(registry, name="behind nginx")
        connector = Connector(proxy.url, instance, kernel.url, tmp_path / "connector.log")
        try:
            wait_status(registry, instance["instance_id"], "online")
        except AssertionError:
            raise AssertionError(connector.log() + proxy.log()) from None
        time.sleep(3)
        assert connector.log().count("connected to") == 1, connector.log()
        assert registry.log().count("online: tunnel from") == 1, registry.log()
        response = requests.post(f"{proxy.url}/api/chat/{instance['instance_id']}", timeout=30,
                                 json={"messages": [{"role": "user", "content": "through nginx and the tunnel"}],
                                       "stream": False})
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["message"]["content"] == "through nginx and the tunnel"
        listed = requests.get(f"{proxy.url}/api/instances/{instance['instance_id']}", headers=ADMIN, timeout=10)
        assert listed.json()["status"] == "online"
    finally:
        if connector is not None:
            connector.stop()
        if proxy is not None:
            proxy.stop()  # first: gunicorn's graceful stop would wait out nginx's kept-alive connections (5 s)
        registry.stop()


# -- systemd ------------------------------------------------------------------------------------------------

@needs_systemd
def test_systemd_accepts_the_unit(tmp_path):
    """``systemd-analyze verify``, with the checkout where the unit expects it; any warning fails."""
    assert (ROOT / ".venv" / "bin" / "gunicorn").exists(), "make test creates .venv with gunicorn"
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace(DEPLOYED_CHECKOUT, str(ROOT)))
    result = subprocess.run([SYSTEMD_ANALYZE, "verify", str(unit)], capture_output=True, text=True, timeout=60,
                            cwd=tmp_path)
    assert result.returncode == 0 and not result.stderr.strip() and not result.stdout.strip(), result.stderr


@needs_systemd
def test_systemd_rejects_a_broken_unit(tmp_path):
    """The check above can fail: a misspelt key is reported."""
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace(DEPLOYED_CHECKOUT, str(ROOT)).replace("KillMode=", "KilMode="))
    result = subprocess.run([SYSTEMD_ANALYZE, "verify", str(unit)], capture_output=True, text=True, timeout=60,
                            cwd=tmp_path)
    assert "KilMode" in result.stderr


def test_the_unit_fits_gunicorn_and_nginx():
    gunicorn = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    env = unit_environment()
    # Stopping: the master gets SIGTERM and gives streams graceful_timeout; systemd waits longer before SIGKILL.
    assert unit_value("KillSignal") == "SIGTERM" and unit_value("KillMode") == "mixed"
    assert seconds(unit_value("TimeoutStopSec")) >= gunicorn["graceful_timeout"] + 10
    assert unit_value("ExecReload") == "/bin/kill -HUP $MAINPID"
    # Started from the checkout's venv, with the checkout's gunicorn.conf.py.
    checkout = unit_value("WorkingDirectory")
    assert checkout == DEPLOYED_CHECKOUT
    assert unit_value("ExecStart") == f"{checkout}/.venv/bin/gunicorn -c gunicorn.conf.py app:app"
    # Two descriptors per stream.
    assert int(unit_value("LimitNOFILE")) >= 2 * gunicorn["worker_connections"] + 64
    # The data directory is the one path it may write.
    assert unit_value("ProtectSystem") == "strict" and unit_value("NoNewPrivileges") == "yes"
    assert unit_value("ReadWritePaths") == env["KERNEL_DATA_DIR"] == "/var/lib/" + unit_value("StateDirectory")
    assert unit_value("User") not in ("", "root")
    # nginx proxies to where gunicorn listens; the server believes one proxy's X-Forwarded-For.
    assert f"server {env['KERNEL_BIND']};" in NGINX_CONF.read_text()
    assert env["KERNEL_TRUSTED_PROXIES"] == "1"
    # Every setting the unit and the example env file name is one the server reads.
    known = set(settings.SETTINGS) | {"KERNEL_BIND", "KERNEL_WORKER_CONNECTIONS", "KERNEL_LOG_LEVEL"}
    named = {k for k in env if k.startswith("KERNEL_")}
    named |= set(re.findall(r"^#?(KERNEL_[A-Z0-9_]+)=", ENV_FILE.read_text(), re.M))
    assert named <= known, named - known


def test_the_nginx_timeouts_outlast_the_servers_keepalives():
    config = NGINX_CONF.read_text()
    stream_timeout, tunnel_timeout = (seconds(t) for t in re.findall(r"proxy_read_timeout (\w+);", config))
    ping_s = settings.SETTINGS["KERNEL_SSE_PING_S"][0]
    assert stream_timeout >= 4 * ping_s
    assert stream_timeout >= settings.SETTINGS["KERNEL_UPSTREAM_TIMEOUT_S"][0]
    assert tunnel_timeout >= 4 * settings.SETTINGS["KERNEL_TUNNEL_TIMEOUT_S"][0]
    gunicorn = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    assert seconds(re.search(r"keepalive_timeout (\w+);", config).group(1)) < gunicorn["keepalive"]
