"""The real server under gunicorn + gevent, relaying to a real upstream, talked to over sockets."""

import http.client
import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
import requests

from tests.conftest import sse_events

HELLO = [{"role": "user", "content": "Hello there, who are you?"}]


@pytest.fixture
def sdk(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=20)


def content(events):
    return "".join(e["choices"][0]["delta"].get("content", "") for e in events if isinstance(e, dict) and e.get("choices"))


# -- the OpenAI SDK, unchanged ------------------------------------------------------------------------


def test_sdk_streams(sdk):
    stream = sdk.chat.completions.create(model="any", messages=HELLO, stream=True)
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Hello there, who are you?"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert len({c.id for c in chunks}) == 1
    assert all(c.object == "chat.completion.chunk" and c.system_fingerprint for c in chunks)


def test_sdk_without_stream_gets_a_completion(sdk):
    completion = sdk.chat.completions.create(model="any", messages=HELLO)
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == "Hello there, who are you?"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.completion_tokens == 5
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + 5


def test_sdk_include_usage(sdk):
    chunks = list(
        sdk.chat.completions.create(
            model="any", messages=HELLO, stream=True, stream_options={"include_usage": True}, max_tokens=2
        )
    )
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == 2
    assert chunks[-2].choices[0].finish_reason == "length"
    assert all(c.usage is None for c in chunks[:-1])


def test_sdk_lists_models(sdk):
    assert [m.id for m in sdk.models.list()] == ["upstream-model"]


@pytest.mark.parametrize(
    "kwargs, exception, param",
    [
        ({"messages": [{"role": "robot", "content": "x"}]}, openai.BadRequestError, "messages[0].role"),
        ({"messages": HELLO, "temperature": 5}, openai.BadRequestError, "temperature"),
        ({"messages": HELLO, "model": "error:500"}, openai.InternalServerError, None),
        ({"messages": HELLO, "model": "error:400"}, openai.BadRequestError, None),
        ({"messages": HELLO, "model": "error:429"}, openai.RateLimitError, None),
    ],
)
def test_sdk_raises_the_matching_exception(sdk, kwargs, exception, param):
    kwargs.setdefault("model", "any")
    with pytest.raises(exception) as info:
        sdk.chat.completions.create(**kwargs)
    assert info.value.param == param
    assert info.value.code


def test_sdk_raises_on_an_error_mid_stream(sdk):
    stream = sdk.chat.completions.create(model="midfail:3", messages=HELLO, stream=True)
    received = []
    with pytest.raises(openai.APIError, match="mid-stream"):
        for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")
    assert "".join(received) == "m0 m1 m2 "


def test_sdk_reads_the_request_id(sdk):
    response = sdk.chat.completions.with_raw_response.create(model="any", messages=HELLO)
    assert response.request_id.startswith("req_")


# -- the documented endpoint and its own example -------------------------------------------------------


def test_seed_http_client_example(server):
    """The documentation's own Python example, against our server."""
    conn = http.client.HTTPConnection(f"127.0.0.1:{server.port}")
    data = {
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Tell me about artificial intelligence."},
        ],
        "stream": True,
    }
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
    conn.request("POST", "/api/kernel2/chat", body=json.dumps(data), headers=headers)
    response = conn.getresponse()
    assert response.status == 200
    printed, done = [], False
    for line in response:
        decoded = line.decode("utf-8").strip()
        if decoded == "data: [DONE]":
            done = True
            break
        if decoded.startswith("data: "):
            chunk = json.loads(decoded[6:])
            printed.append(chunk["choices"][0]["delta"].get("content", ""))
    conn.close()
    assert done
    assert "".join(printed) == "Tell me about artificial intelligence."


def test_stream_is_the_default_on_kernel2(server):
    response = server.post("/api/kernel2/chat", {"messages": HELLO}, stream=True)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["X-Accel-Buffering"] == "no"
    assert "Connection" not in response.headers or response.headers["Connection"].lower() == "keep-alive"
    events = sse_events(response)
    assert events[-1] == "[DONE]"
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert events[-2]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}


def test_forwards_sampling_fields(server, upstream):
    body = {
        "messages": [{"role": "user", "content": [{"type": "text", "text": "part one "}, {"type": "text", "text": "two"}]}],
        "model": "record-me",
        "temperature": 0.7,
        "max_completion_tokens": 9,
        "max_tokens": 3,
        "top_p": 0.5,
        "stop": "END",
        "seed": 42,
        "presence_penalty": 0.1,
        "frequency_penalty": -0.1,
        "user": "u1",
        "stream": False,
    }
    assert server.post("/api/kernel2/chat", body).status_code == 200
    sent = next(b for b in reversed(upstream.stats.bodies) if b.get("model") == "record-me")
    assert sent["messages"] == [{"role": "user", "content": "part one two"}]
    assert sent["stream"] is True
    assert (sent["temperature"], sent["max_tokens"], sent["top_p"], sent["seed"]) == (0.7, 9, 0.5, 42)
    assert sent["stop"] == ["END"]
    assert (sent["presence_penalty"], sent["frequency_penalty"], sent["user"]) == (0.1, -0.1, "u1")


def test_seed_defaults_are_sent(server, upstream):
    server.post("/api/kernel2/chat", {"messages": HELLO, "model": "defaults", "stream": False})
    sent = next(b for b in reversed(upstream.stats.bodies) if b.get("model") == "defaults")
    assert (sent["temperature"], sent["max_tokens"]) == (0.1, 2000)
    assert "top_p" not in sent and "stop" not in sent


# -- errors ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method, path, body, status, code",
    [
        ("POST", "/api/kernel2/chat", b"{not json", 400, "invalid_json"),
        ("POST", "/api/kernel2/chat", b"", 400, "invalid_json"),
        ("POST", "/api/kernel2/chat", b'{"messages": []}', 400, "invalid_request"),
        ("GET", "/api/kernel2/chat", None, 405, "method_not_allowed"),
        ("GET", "/no/such/route", None, 404, "not_found"),
        ("POST", "/api/kernel2/chat", b'{"messages":[{"role":"user","content":"x"}],"model":"error:500"}', 502, "upstream_error"),
        ("POST", "/api/kernel2/chat", b'{"messages":[{"role":"user","content":"x"}],"model":"error:503"}', 503, "backend_unavailable"),
    ],
)
def test_error_envelope(server, method, path, body, status, code):
    headers = {"Content-Type": "application/json"} if body is not None else {}
    response = requests.request(method, server.url + path, data=body, headers=headers, timeout=10)
    assert response.status_code == status
    envelope = response.json()
    assert envelope["success"] is False and envelope["code"] == status
    assert envelope["message"] == envelope["error"]["message"]
    assert envelope["error"]["code"] == code
    assert "Traceback" not in response.text


def test_body_over_the_limit_is_413(start_server):
    small = start_server(KERNEL_BACKEND="echo", KERNEL_MAX_BODY_BYTES=1000)
    body = {"messages": [{"role": "user", "content": "x" * 2000}]}
    response = small.post("/api/kernel2/chat", body)
    assert response.status_code == 413
    assert "1000 bytes" in response.json()["message"]
    assert small.post("/api/kernel2/chat", {"messages": HELLO, "stream": False}).status_code == 200


def test_unreachable_backend_is_a_fast_503(start_server):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    down = start_server(KERNEL_BACKEND="openai", KERNEL_UPSTREAM_URL=f"http://127.0.0.1:{closed}/v1")
    started = time.monotonic()
    response = down.post("/api/kernel2/chat", {"messages": HELLO})
    assert time.monotonic() - started < 2
    assert response.status_code == 503
    assert "Connection refused" in response.json()["message"]
    assert requests.get(down.url + "/readyz", timeout=5).status_code == 503
    assert requests.get(down.url + "/healthz", timeout=5).status_code == 200


def test_upstream_timeout_before_the_stream_is_a_504(start_server, upstream):
    impatient = start_server(
        KERNEL_BACKEND="openai", KERNEL_UPSTREAM_URL=upstream.url, KERNEL_UPSTREAM_TIMEOUT_S=0.5, KERNEL_SSE_PING_S=5
    )
    response = impatient.post("/api/kernel2/chat", {"messages": HELLO, "model": "stall:2"})
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "backend_timeout"


@pytest.mark.parametrize(
    "model, text_before, message",
    [
        ("midfail:3", "m0 m1 m2 ", "closed the connection mid-stream"),
        ("errorevent", "before ", "model crashed"),
        ("garbage", "before ", "not JSON"),
        ("noend", "cut ", "before finishing"),
    ],
)
def test_failure_mid_stream_is_one_error_event_then_done(server, model, text_before, message):
    response = server.post("/api/kernel2/chat", {"messages": HELLO, "model": model}, stream=True)
    assert response.status_code == 200
    events = sse_events(response)
    assert events[-1] == "[DONE]"
    error = events[-2]
    assert error["success"] is False and error["code"] == 502
    assert message in error["error"]["message"]
    assert content(events[:-2]) == text_before
    # the worker keeps serving
    assert server.post("/api/kernel2/chat", {"messages": HELLO, "stream": False}).status_code == 200


def test_close_delimited_upstream_streams(server):
    response = server.post("/api/kernel2/chat", {"messages": HELLO, "model": "plain:4"}, stream=True)
    assert content(sse_events(response)) == "p0 p1 p2 p3 "


# -- streams under load ------------------------------------------------------------------------------


def test_pings_while_the_backend_is_silent(server):
    started = time.monotonic()
    response = server.post("/api/kernel2/chat", {"messages": HELLO, "model": "stall:1.2"}, stream=True)
    assert response.status_code == 200
    assert time.monotonic() - started < 1.0  # headers went out before the backend answered
    raw = b"".join(response.iter_content(chunk_size=None))
    assert raw.count(b": ping\n\n") >= 2
    assert raw.endswith(b"data: [DONE]\n\n")


def test_pings_when_the_upstream_is_silent_after_its_headers(server):
    response = server.post("/api/kernel2/chat", {"messages": HELLO, "model": "headstall:1"}, stream=True)
    raw = b"".join(response.iter_content(chunk_size=None))
    assert raw.count(b": ping\n\n") >= 2
    assert b'"content":"late"' in raw


def _disconnect_after(server, model, read_bytes):
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    body = json.dumps({"messages": HELLO, "model": model}).encode()
    sock.sendall(
        b"POST /api/kernel2/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    received = b""
    while len(received) < read_bytes:
        received += sock.recv(4096)
    if not read_bytes:
        time.sleep(0.2)  # let the request reach the upstream
    sock.close()
    return time.monotonic()


def test_client_disconnect_aborts_the_upstream_stream(server, upstream):
    before = upstream.stats.snapshot()
    closed_at = _disconnect_after(server, "slow:400:0.05", read_bytes=1500)
    assert upstream.stats.wait_for(lambda s: s.aborted > before["aborted"], timeout=2.0)
    assert time.monotonic() - closed_at < 2.0
    assert upstream.stats.completed == before["completed"]


def test_client_disconnect_while_waiting_for_the_first_token(start_server, upstream):
    """With pings far apart, the server still notices a departed client within a second or two."""
    quiet = start_server(KERNEL_BACKEND="openai", KERNEL_UPSTREAM_URL=upstream.url, KERNEL_SSE_PING_S=30)
    before = upstream.stats.snapshot()
    closed_at = _disconnect_after(quiet, "headstall:20", read_bytes=0)
    assert upstream.stats.wait_for(lambda s: s.aborted > before["aborted"], timeout=3.0)
    assert time.monotonic() - closed_at < 3.0
    assert upstream.stats.completed == before["completed"]


def test_deltas_are_relayed_as_they_arrive(server):
    started = time.monotonic()
    response = server.post("/api/kernel2/chat", {"messages": HELLO, "model": "slow:5:0.3"}, stream=True)
    arrivals = []
    for line in response.iter_lines(chunk_size=None):
        if b'"content":"t' in line:
            arrivals.append(time.monotonic() - started)
    assert len(arrivals) == 5
    assert arrivals[0] < 0.6 and arrivals[-1] > 1.4


def test_200_concurrent_streams_through_one_worker(server):
    def one(i):
        text = f"stream {i} says hello"
        response = server.post(
            "/api/kernel2/chat",
            {"messages": [{"role": "user", "content": text}], "model": "slow:20:0.01"},
            stream=True,
            timeout=60,
        )
        events = sse_events(response)
        return events[-1] == "[DONE]" and content(events) == "".join(f"t{j} " for j in range(20))

    with ThreadPoolExecutor(max_workers=200) as pool:
        results = list(pool.map(one, range(200)))
    assert sum(results) == 200


def test_health_endpoints(server):
    assert requests.get(server.url + "/healthz", timeout=5).json() == {"status": "ok"}
    assert requests.get(server.url + "/readyz", timeout=5).json() == {"status": "ready", "backend": "openai"}
