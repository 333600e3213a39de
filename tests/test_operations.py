"""Running it for real: metrics across workers, chat keys and per-client limits, Host checks, and stopping
or reloading gunicorn in the middle of streams. Real gunicorn processes throughout."""

import json
import os
import re
import signal
import threading
import time

import openai
import pytest
import requests

from tests.conftest import sse_events
from tests.registry_fixtures import ADMIN, register, start_registry, wait_status

HELLO = [{"role": "user", "content": "one two three"}]
JSON = {"Content-Type": "application/json"}


def chat(server, model=None, headers=None, stream=True, **kwargs):
    body = {"messages": HELLO, "stream": stream, **({"model": model} if model else {})}
    return requests.post(server.url + "/api/kernel2/chat", data=json.dumps(body), headers={**JSON, **(headers or {})},
                         stream=stream, timeout=kwargs.pop("timeout", 30), **kwargs)


def metric(text, name, **labels):
    """The value of one sample in Prometheus text format (0 if absent)."""
    selector = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = re.escape(name) + (r"\{" + re.escape(selector) + r"\}" if labels else "") + r" ([0-9.e+]+)"
    found = re.search(r"^" + pattern + r"$", text, re.M)
    return float(found.group(1)) if found else 0.0


# -- metrics -----------------------------------------------------------------------------------------


def test_metrics_add_up_every_worker(start_server, upstream):
    from concurrent.futures import ThreadPoolExecutor

    server = start_server(KERNEL_BACKEND="openai", KERNEL_UPSTREAM_URL=upstream.url, KERNEL_WORKERS=2)

    def one(_):
        return requests.post(server.url + "/api/kernel2/chat", json={"messages": HELLO, "stream": False,
                             "model": "slow:3:0.05"}, headers={"Connection": "close"}, timeout=30).status_code

    sent, workers = 0, set()
    with ThreadPoolExecutor(10) as pool:
        while len(workers) < 2 and sent < 300:  # until both workers have served some of the load
            assert set(pool.map(one, range(10))) == {200}
            sent += 10
            workers = {line.split("] [", 2)[1] for line in server.log().splitlines() if "POST /api/kernel2/chat 200" in line}
    assert len(workers) == 2, "the load never reached both workers"
    sse_events(chat(server, model="midfail:2"))  # one backend error, mid-stream
    text = requests.get(server.url + "/metrics", timeout=10).text
    assert metric(text, "kernel_requests_total", method="POST", route="/api/kernel2/chat", status="200") == sent + 1
    assert metric(text, "kernel_completion_tokens_total", backend="openai") == sent * 3
    assert metric(text, "kernel_backend_errors_total", code="upstream_error") == 1
    assert metric(text, "kernel_request_duration_seconds_count", route="/api/kernel2/chat") == sent + 1
    assert metric(text, "kernel_time_to_first_chunk_seconds_count", route="/api/kernel2/chat") == 1
    assert metric(text, "kernel_chats_in_flight") == 0
    assert "kernel_registry_instances" in text


def test_metrics_are_closed_to_other_addresses(start_server):
    server = start_server(KERNEL_BACKEND="echo", KERNEL_METRICS_ALLOW="10.0.0.0/8")
    response = requests.get(server.url + "/metrics", timeout=10)
    assert response.status_code == 403 and "KERNEL_METRICS_ALLOW" in response.json()["message"]


# -- keys, limits, hosts ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keyed(start_server, upstream):
    return start_server(KERNEL_BACKEND="openai", KERNEL_UPSTREAM_URL=upstream.url, KERNEL_CHAT_KEYS="key-one,key-two",
                        KERNEL_ADMIN_KEY="admin-key", KERNEL_MAX_STREAMS_PER_CLIENT=2)


@pytest.mark.parametrize(
    "authorization, status",
    [
        (None, 401),
        ("Bearer wrong", 401),
        ("Basic a2V5LW9uZQ==", 401),
        ("Bearer key-two", 200),
        ("Bearer admin-key", 200),
    ],
)
def test_chat_keys(keyed, authorization, status):
    headers = {"Authorization": authorization} if authorization else {}
    response = chat(keyed, headers=headers, stream=False)
    assert response.status_code == status
    if status == 401:
        assert response.json()["code"] == 401 and response.headers["WWW-Authenticate"] == "Bearer"
    models = requests.get(keyed.url + "/v1/models", headers=headers, timeout=10)
    assert models.status_code == status


def test_the_sdk_uses_a_chat_key(keyed):
    client = openai.OpenAI(base_url=keyed.url + "/v1", api_key="key-one", max_retries=0)
    answer = client.chat.completions.create(model="m", messages=HELLO)
    assert answer.choices[0].message.content == "one two three"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=keyed.url + "/v1", api_key="nope", max_retries=0).chat.completions.create(
            model="m", messages=HELLO)


def test_one_client_cannot_take_every_stream(keyed):
    key = {"Authorization": "Bearer key-one"}
    open_streams = [chat(keyed, model="slow:6:0.25", headers=key) for _ in range(2)]
    try:
        refused = chat(keyed, headers=key, stream=False)
        assert refused.status_code == 429
        assert refused.headers["Retry-After"] == "1" and refused.json()["error"]["code"] == "too_many_streams"
        other = chat(keyed, headers={"Authorization": "Bearer key-two"}, stream=False)
        assert other.status_code == 200  # another client is not held back
    finally:
        for response in open_streams:
            assert sse_events(response)[-1] == "[DONE]"
    assert chat(keyed, headers=key, stream=False).status_code == 200  # the slots came back


def test_a_private_instance_needs_a_key_and_a_public_one_does_not(tmp_path, upstream):
    registry = start_registry(tmp_path, KERNEL_CHAT_KEYS="key-one")
    try:
        instance = register(registry, endpoint=upstream.url)
        wait_status(registry, instance["instance_id"], "online")
        url = f"{registry.url}/api/chat/{instance['instance_id']}"
        body = {"messages": HELLO, "stream": False}
        assert requests.post(url, json=body, timeout=10).status_code == 401
        assert requests.post(url, json=body, headers={"Authorization": "Bearer key-one"}, timeout=10).status_code == 200
        changed = requests.patch(f"{registry.url}/api/instances/{instance['instance_id']}", json={"public": True},
                                 headers=ADMIN, timeout=10)
        assert changed.json()["public"] is True
        assert requests.post(url, json=body, timeout=10).status_code == 200
    finally:
        registry.stop()


@pytest.fixture(scope="module")
def plain(start_server):
    """A server with the default Host allow-list."""
    return start_server(KERNEL_BACKEND="echo")


@pytest.mark.parametrize(
    "host, allowed, status",
    [
        ("127.0.0.1:8002", "", 200),
        ("[::1]:8002", "", 200),
        ("localhost:8002", "", 200),
        ("kernel.localhost", "", 200),
        ("10.1.2.3", "", 200),
        ("attacker.example:8002", "", 403),  # a DNS-rebinding page's own name
        ("chat.example.com", "chat.example.com", 200),
        ("a.chat.example.com", ".chat.example.com", 200),
        ("chat.example.com.evil.net", ".chat.example.com", 403),
    ],
)
def test_host_must_be_one_the_server_answers_to(start_server, plain, host, allowed, status):
    server = start_server(KERNEL_BACKEND="echo", KERNEL_ALLOWED_HOSTS=allowed) if allowed else plain
    response = requests.post(server.url + "/api/kernel2/chat", json={"messages": HELLO, "stream": False},
                             headers={"Host": host}, timeout=10)
    assert response.status_code == status
    if status == 403:
        assert "KERNEL_ALLOWED_HOSTS" in response.json()["message"]


def test_a_cross_site_form_post_is_refused(keyed):
    """What a page on any website can make a browser send without asking: text/plain, JSON inside."""
    response = requests.post(keyed.url + "/api/kernel2/chat", data=json.dumps({"messages": HELLO}),
                             headers={"Content-Type": "text/plain", "Origin": "https://attacker.example"}, timeout=10)
    assert response.status_code == 415
    assert "Access-Control-Allow-Origin" not in response.headers


# -- stopping and reloading -------------------------------------------------------------------------------


def read_stream(response, into):
    into.extend(sse_events(response))


def master_pid(server):
    return server.process.pid


def stream_through_sigterm(server, model):
    """The events of a stream during which the server's master gets SIGTERM."""
    response = chat(server, model=model)
    events = []
    reader = threading.Thread(target=read_stream, args=(response, events))
    reader.start()
    time.sleep(0.5)
    os.kill(master_pid(server), signal.SIGTERM)
    reader.join(30)
    return events


def test_sigterm_mid_stream_delivers_the_whole_answer(start_server, upstream):
    server = start_server(KERNEL_BACKEND="openai", KERNEL_UPSTREAM_URL=upstream.url)
    events = stream_through_sigterm(server, "slow:10:0.2")
    assert events[-1] == "[DONE]"
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1] if e["choices"])
    assert text == "".join(f"t{i} " for i in range(10))
    assert server.process.wait(30) == 0


def test_a_stream_longer_than_the_graceful_timeout_ends_with_an_error_event(start_server, upstream):
    server = start_server(KERNEL_BACKEND="openai", KERNEL_UPSTREAM_URL=upstream.url, KERNEL_GRACEFUL_TIMEOUT_S=5)
    events = stream_through_sigterm(server, "slow:100:0.1")
    assert events[-1] == "[DONE]", "the stream was cut instead of ended"
    assert events[-2]["error"]["code"] == "shutting_down"
    assert 0 < sum(1 for e in events if isinstance(e, dict) and e.get("choices")) < 100
    assert server.process.wait(30) == 0
    assert "end=backend_error" in server.log()


def test_a_reload_loses_no_request(start_server, upstream):
    server = start_server(KERNEL_BACKEND="openai", KERNEL_UPSTREAM_URL=upstream.url, KERNEL_WORKERS=2)
    long_one = chat(server, model="slow:15:0.2")
    events = []
    reader = threading.Thread(target=read_stream, args=(long_one, events))
    reader.start()
    os.kill(master_pid(server), signal.SIGHUP)
    statuses = []
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        statuses.append(requests.post(server.url + "/api/kernel2/chat", json={"messages": HELLO, "stream": False},
                                      timeout=30).status_code)
    reader.join(30)
    assert statuses and set(statuses) == {200}
    assert events[-1] == "[DONE]" and len([e for e in events[:-1] if e["choices"] and
                                           e["choices"][0]["delta"].get("content")]) == 15
    assert server.log().count("Booting worker") >= 4  # the reload really started new workers
