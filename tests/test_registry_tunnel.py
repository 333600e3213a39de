"""The registry with real processes: a registry server (gunicorn, gevent worker), a kernel relaying to the
test upstream (conftest's ``server``), and the connector between them (``flask --app app connect``)."""

import json
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest
import requests

from tests.conftest import sse_events
from tests.seed_examples import REGISTRY_PYTHON, http_client_example
from tests.registry_fixtures import (  # noqa: F401  (registry is a fixture)
    ADMIN,
    Connector,
    instance_status,
    register,
    registry,
    start_registry,
    wait_status,
)

WORDS = "hello through the tunnel"
MESSAGES = [{"role": "user", "content": WORDS}]


def content(events):
    return "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e != "[DONE]" and e["choices"])


def chat(registry, instance_id, body, path="", **kwargs):
    # Connection: close, so that no idle kept-alive connection holds the registry's graceful stop
    return requests.post(f"{registry.url}/api/chat/{instance_id}{path}", json=body, timeout=30,
                         headers={"Connection": "close"}, **kwargs)


def open_tunnel(registry, server, log_path, name="tunnelled"):
    instance = register(registry, name=name)
    connector = Connector(registry.url, instance, server.url, log_path)
    try:
        wait_status(registry, instance["instance_id"], "online")
    except AssertionError:
        connector.stop()
        raise AssertionError(connector.log()) from None
    return instance, connector


@pytest.fixture(scope="module")
def tunnel(registry, server, tmp_path_factory):
    """(registry, instance, connector): a tunnel instance, online, relaying to the kernel ``server``.

    Shared by the tests that leave it as they found it; the others open their own.
    """
    instance, connector = open_tunnel(registry, server, tmp_path_factory.mktemp("connector") / "connector.log")
    yield registry, instance, connector
    connector.stop()


@pytest.fixture
def own_tunnel(registry, server, tmp_path):
    instance, connector = open_tunnel(registry, server, tmp_path / "connector.log", name="own")
    yield registry, instance, connector
    connector.stop()


def kernel_admin(server):
    return {"Authorization": "Bearer " + (Path(server.log_path).parent / "data" / "admin.key").read_text().strip()}


def test_chat_streamed_and_whole_through_both_urls(tunnel, server, upstream):
    registry, instance, connector = tunnel
    role = requests.post(server.url + "/api/kernel2/roles", headers=kernel_admin(server), timeout=10,
                         json={"name": "Tunnel persona", "system_prompt": "You are the tunnel persona."}).json()
    for path in ("", "/chat/completions"):
        response = chat(registry, instance["instance_id"], {"messages": MESSAGES}, path, stream=True)
        assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/event-stream")
        events = sse_events(response)
        assert content(events) == WORDS and events[-1] == "[DONE]"
        assert events[-2]["choices"][0]["finish_reason"] == "stop"
        body = {"messages": MESSAGES, "stream": False, "metadata": {"role_id": role["role_id"]}}
        whole = chat(registry, instance["instance_id"], body, path)
        assert whole.status_code == 200, whole.text
        completion = whole.json()
        assert completion["object"] == "chat.completion"
        assert completion["choices"][0]["message"] == {"role": "assistant", "content": WORDS}
        assert completion["usage"] == {"prompt_tokens": 7, "completion_tokens": 4, "total_tokens": 11}
        # metadata reached the instance, whose own role applied; the endpoint's defaults went along
        sent = upstream.stats.bodies[-1]
        assert sent["messages"][0] == {"role": "system", "content": "You are the tunnel persona."}
        assert sent["temperature"] == 0.7 and sent["max_tokens"] == 2000
    assert "connected to" in connector.log() and instance["instance_secret"] not in connector.log()


def test_openai_sdk(tunnel):
    registry, instance, _ = tunnel
    client = openai.OpenAI(base_url=f"{registry.url}/api/chat/{instance['instance_id']}", api_key="unused",
                           max_retries=0)
    completion = client.chat.completions.create(model="any", messages=MESSAGES)
    assert completion.choices[0].message.content == WORDS
    chunks = client.chat.completions.create(model="any", messages=MESSAGES, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == WORDS
    missing = openai.OpenAI(base_url=f"{registry.url}/api/chat/{'0' * 8}-0000-4000-8000-{'0' * 12}",
                            api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError):
        missing.chat.completions.create(model="any", messages=MESSAGES)
    with pytest.raises(openai.UnprocessableEntityError) as invalid:
        client.chat.completions.create(model="any", messages=MESSAGES, temperature=1.5)
    assert invalid.value.body["param"] == "temperature"


def test_seed_http_client_example(tunnel):
    """Seed 001's Python example, verbatim but for the host (plain HTTP here) and the instance id."""
    registry, instance, _ = tunnel
    host = registry.url.split("//", 1)[1]
    for path in ("/api/chat/{instance_id}", "/api/chat/{instance_id}/chat/completions"):
        printed, done = http_client_example(host, path.replace("{instance_id}", instance["instance_id"]),
                                            REGISTRY_PYTHON)
        assert done and printed == "Hello, please introduce yourself."


def test_50_concurrent_chats_take_about_as_long_as_one(tunnel):
    registry, instance, _ = tunnel
    body = {"messages": MESSAGES, "model": "slow:5:0.1", "stream": False}

    def one(_=None):
        started = time.monotonic()
        response = chat(registry, instance["instance_id"], body)
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["message"]["content"] == "".join(f"t{i} " for i in range(5))
        return time.monotonic() - started

    one()
    single = one()
    started = time.monotonic()
    with ThreadPoolExecutor(50) as pool:
        times = list(pool.map(one, range(50)))
    together = time.monotonic() - started
    assert len(times) == 50
    assert together < 3 * single + 1.0, (single, together)


def test_connector_gone_means_offline_and_503_then_back(own_tunnel, server, tmp_path):
    registry, instance, connector = own_tunnel
    instance_id = instance["instance_id"]
    connector.signal(signal.SIGSTOP)  # vanished without closing anything: only the keep-alive can tell
    try:
        took = wait_status(registry, instance_id, "offline", timeout=10)
        assert took < 5  # KERNEL_TUNNEL_TIMEOUT_S is 2 here (30 by default)
        response = chat(registry, instance_id, {"messages": MESSAGES})
        assert response.status_code == 503 and int(response.headers["Retry-After"]) >= 1
        assert response.json()["error"]["code"] == "instance_unavailable"
    finally:
        connector.signal(signal.SIGCONT)
    connector.stop()  # SIGKILL
    again = Connector(registry.url, instance, server.url, tmp_path / "connector2.log")
    try:
        wait_status(registry, instance_id, "online")
        assert content(sse_events(chat(registry, instance_id, {"messages": MESSAGES}, stream=True))) == WORDS
    finally:
        again.stop()


def test_registry_restart_the_connector_comes_back_by_itself(server, tmp_path):
    first = start_registry(tmp_path)
    instance = register(first, name="survivor")
    connector = Connector(first.url, instance, server.url, tmp_path / "connector.log")
    try:
        wait_status(first, instance["instance_id"], "online")
        started = time.monotonic()
        first.stop()
        assert time.monotonic() - started < 5  # open tunnels do not hold a graceful stop
        second = start_registry(tmp_path, port=first.port)
        try:
            wait_status(second, instance["instance_id"], "online", timeout=15)
            response = chat(second, instance["instance_id"], {"messages": MESSAGES, "stream": False})
            assert response.json()["choices"][0]["message"]["content"] == WORDS
        finally:
            second.stop()
        log = connector.log()
        assert "disconnected" in log and log.count("connected to") >= 2
    finally:
        connector.stop()


def test_client_that_leaves_cancels_the_generation(tunnel, upstream):
    registry, instance, _ = tunnel
    before = upstream.stats.snapshot()["aborted"]
    response = chat(registry, instance["instance_id"], {"messages": MESSAGES, "model": "headstall:20"}, stream=True)
    assert response.status_code == 200
    next(response.iter_content(chunk_size=None))  # the stream has started
    assert upstream.stats.wait_for(lambda s: s.started > 0, timeout=5)
    response.close()
    started = time.monotonic()
    assert upstream.stats.wait_for(lambda s: s.snapshot()["aborted"] > before, timeout=8)
    assert time.monotonic() - started < 6


def test_direct_instance_follows_its_endpoint(registry):
    from tests.upstream import Upstream

    endpoint = Upstream().start()
    port = endpoint.server.server_address[1]
    instance = register(registry, name="direct", endpoint=endpoint.url)
    instance_id = instance["instance_id"]
    try:
        wait_status(registry, instance_id, "online", timeout=5)
        events = sse_events(chat(registry, instance_id, {"messages": MESSAGES}, stream=True))
        assert content(events) == WORDS
        whole = chat(registry, instance_id, {"messages": MESSAGES, "stream": False}).json()
        assert whole["choices"][0]["message"]["content"] == WORDS and whole["usage"]["total_tokens"] == 11
    finally:
        endpoint.stop()
    wait_status(registry, instance_id, "offline", timeout=5)
    response = chat(registry, instance_id, {"messages": MESSAGES})
    assert response.status_code == 503 and int(response.headers["Retry-After"]) >= 1
    endpoint = Upstream(port=port).start()
    try:
        wait_status(registry, instance_id, "online", timeout=5)
        assert instance_status(registry, instance_id) == "online"
    finally:
        endpoint.stop()


def test_instance_status_is_the_same_in_every_worker(tmp_path):
    """With several workers (tunnels off), the status lives in SQLite: every worker answers alike."""
    from tests.upstream import Upstream

    endpoint = Upstream().start()
    multi = start_registry(tmp_path, KERNEL_WORKERS=2)
    try:
        instance = register(multi, name="direct", endpoint=endpoint.url)
        wait_status(multi, instance["instance_id"], "online", timeout=5)
        assert {instance_status(multi, instance["instance_id"]) for _ in range(20)} == {"online"}
        tunnel = register(multi, name="tunnel")
        response = chat(multi, tunnel["instance_id"], {"messages": MESSAGES})
        assert response.status_code == 503 and "KERNEL_WORKERS" in response.json()["message"]
    finally:
        multi.stop()
        endpoint.stop()


def test_list_shows_status(tunnel):
    registry, instance, _ = tunnel
    listed = requests.get(registry.url + "/api/instances?limit=200", headers=ADMIN, timeout=10).json()
    mine = [i for i in listed["data"] if i["instance_id"] == instance["instance_id"]]
    assert len(mine) == 1 and mine[0]["status"] == "online" and mine[0]["last_seen_at"]
    assert listed["total"] == len(listed["data"])


def test_a_new_connection_replaces_the_old_one(own_tunnel, server, tmp_path):
    registry, instance, connector = own_tunnel
    second = Connector(registry.url, instance, server.url, tmp_path / "second.log")
    try:
        deadline = time.monotonic() + 10
        while "connected to" not in second.log() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "connected to" in second.log()
        response = chat(registry, instance["instance_id"], {"messages": MESSAGES, "stream": False})
        assert response.json()["choices"][0]["message"]["content"] == WORDS
        assert instance_status(registry, instance["instance_id"]) == "online"
    finally:
        second.stop()


class FakeInstance:
    """A hand-driven instance on the tunnel protocol, to misbehave on purpose."""

    def __init__(self, registry, instance):
        from kernel.registry import protocol, ws

        self.protocol, self.ws_module = protocol, ws
        url = f"{registry.url.replace('http', 'ws', 1)}/api/instances/{instance['instance_id']}/connect"
        self.ws = ws.connect(url, [("Authorization", f"Bearer {instance['instance_secret']}")], 1 << 20, 10)
        self.ws.send_text(protocol.dumps({"type": "hello", "version": 1}))
        self.welcome = protocol.loads(self.ws.receive(timeout=10))

    def next_start(self):
        while True:
            message = self.protocol.loads(self.ws.receive(timeout=10))
            if message["type"] == "start":
                return message

    def send(self, message):
        self.ws.send_text(self.protocol.dumps(message))

    def closed_code(self):
        with pytest.raises(self.ws_module.Closed) as closed:
            while True:
                self.ws.receive(timeout=10)
        self.ws.release()
        return closed.value.code


def in_thread(function, *args):
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("value", function(*args)), daemon=True)
    thread.start()
    return thread, result


def test_misbehaving_instances_are_cut_off_without_harming_others(tunnel):
    registry, good, _ = tunnel
    bad = register(registry, name="hostile")
    fake = FakeInstance(registry, bad)
    assert fake.welcome["type"] == "welcome" and fake.welcome["version"] == 1
    wait_status(registry, bad["instance_id"], "online", timeout=5)
    slow = {"messages": MESSAGES, "model": "slow:20:0.05", "stream": False}
    good_chat, good_result = in_thread(chat, registry, good["instance_id"], slow)

    # The registry re-encodes: what an instance sends cannot end the stream early or add headers.
    sneaky = "x\n\ndata: [DONE]\n\nHTTP/1.1 200 OK\r\nX-Evil: 1\r\n\r\n"
    bad_chat, bad_result = in_thread(chat, registry, bad["instance_id"], {"messages": MESSAGES})
    start = fake.next_start()
    assert start["request"]["messages"] == MESSAGES and start["request"]["temperature"] == 0.7
    fake.send({"type": "chunk", "id": start["id"], "text": sneaky})
    fake.send({"type": "done", "id": start["id"], "finish_reason": "stop\r\nX-Evil: 1",
               "usage": {"prompt_tokens": -5}})
    bad_chat.join(10)
    response = bad_result["value"]
    assert "X-Evil" not in response.headers
    events = [json.loads(line[6:]) for line in response.text.split("\n\n") if line.startswith("data: {")]
    assert content(events) == sneaky and response.text.endswith("data: [DONE]\n\n")
    assert events[-1]["choices"][0]["finish_reason"] == "stop"

    # Garbage: cut off, its chat in flight fails with 503, the other instance never notices.
    bad_chat, bad_result = in_thread(chat, registry, bad["instance_id"], {"messages": MESSAGES, "stream": False})
    fake.next_start()
    fake.ws.send_text("this is not json")
    assert fake.closed_code() == fake.protocol.BAD_MESSAGE
    bad_chat.join(10)
    assert bad_result["value"].status_code == 503
    wait_status(registry, bad["instance_id"], "offline", timeout=5)

    # Oversized: cut off as the excess arrives (the cap is 64 KiB in these tests).
    fake = FakeInstance(registry, bad)
    fake.ws.send_text(json.dumps({"type": "chunk", "id": "r1", "text": "x" * 100_000}))
    assert fake.closed_code() == 1009
    wait_status(registry, bad["instance_id"], "offline", timeout=5)

    good_chat.join(15)
    assert good_result["value"].status_code == 200
    assert good_result["value"].json()["choices"][0]["message"]["content"] == "".join(f"t{i} " for i in range(20))
    assert instance_status(registry, good["instance_id"]) == "online"


def test_connector_with_a_wrong_secret_stops_with_a_clear_line(registry, server, tmp_path):
    instance = {**register(registry, name="wrong secret"), "instance_secret": "kis_not-the-secret"}
    connector = Connector(registry.url, instance, server.url, tmp_path / "connector.log")
    try:
        assert connector.process.wait(timeout=20) == 2
        log = connector.log()
        assert "refused instance" in log and "401" in log and "kis_not-the-secret" not in log
    finally:
        connector.stop()


def test_no_tracebacks_in_the_registry_log(registry):
    assert "Traceback" not in registry.log()
