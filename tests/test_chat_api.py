"""The chat routes through Flask's test client, with the echo backend."""

import json

import pytest

from tests.test_chat import parse

HELLO = {"messages": [{"role": "user", "content": "hello world"}]}


@pytest.mark.parametrize(
    "path, body, streams",
    [
        ("/api/kernel2/chat", HELLO, True),
        ("/api/kernel2/chat", {**HELLO, "stream": False}, False),
        ("/v1/chat/completions", HELLO, False),
        ("/v1/chat/completions", {**HELLO, "stream": True}, True),
    ],
)
def test_stream_defaults_per_route(client, path, body, streams):
    response = client.post(path, json=body)
    assert response.status_code == 200
    if streams:
        assert response.mimetype == "text/event-stream"
        assert response.headers["X-Accel-Buffering"] == "no"
        assert "Connection" not in response.headers
        events = parse(response.get_data())
        assert "".join(e["choices"][0]["delta"].get("content", "") for e in events[1:-2]) == "hello world"
    else:
        assert response.mimetype == "application/json"
        assert response.get_json()["choices"][0]["message"]["content"] == "hello world"
        assert response.get_json()["model"] == "echo"


@pytest.mark.parametrize(
    "content_type, status",
    [
        ("application/json", 200),
        ("application/json; charset=utf-8", 200),
        ("text/plain", 415),  # what a cross-site form or fetch sends without asking the server first
        ("application/x-www-form-urlencoded", 415),
        ("multipart/form-data; boundary=x", 415),
        (None, 415),  # a Blob body with no type is sent cross-site without a preflight too
    ],
)
def test_only_json_bodies_are_accepted(client, content_type, status):
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post("/api/kernel2/chat", data=json.dumps({**HELLO, "stream": False}), headers=headers)
    assert response.status_code == status
    if status == 415:
        assert response.get_json()["error"]["code"] == "unsupported_media_type"
        assert "application/json" in response.get_json()["message"]


@pytest.mark.parametrize(
    "method, path, kwargs, status, code, words",
    [
        ("post", "/api/kernel2/chat", {"data": "{", "content_type": "application/json"}, 400, "invalid_json", "not valid JSON"),
        ("post", "/api/kernel2/chat", {"data": b"\xff\xfe", "content_type": "application/json"}, 400, "invalid_json", "not valid JSON"),
        ("post", "/api/kernel2/chat", {"data": "  ", "content_type": "application/json"}, 400, "invalid_json", "empty"),
        ("post", "/api/kernel2/chat", {"data": '{"messages": [{"role": "user", "content": "hi \\ud800"}]}',
                                       "content_type": "application/json"}, 400, "invalid_json", "lone UTF-16 surrogate"),
        ("post", "/v1/chat/completions", {"data": '{"model": "\\udfff", "messages": [{"role": "user", "content": "x"}]}',
                                          "content_type": "application/json"}, 400, "invalid_json", "lone UTF-16 surrogate"),
        ("post", "/api/kernel2/chat", {"data": '{"messages": [{"role": "user", "content": "x"}], "top_p": 1e400}',
                                       "content_type": "application/json"}, 400, "invalid_json", "1e400 is out of range"),
        ("post", "/api/kernel2/chat", {"json": {"messages": [{"role": "x", "content": "y"}]}}, 400, "invalid_request", "messages[0].role"),
        ("get", "/api/kernel2/chat", {}, 405, "method_not_allowed", "use POST"),
        ("delete", "/v1/models", {}, 405, "method_not_allowed", "use GET"),
        ("get", "/v2/nothing", {}, 404, "not_found", "GET /v2/nothing does not exist"),
        ("post", "/api/kernel2/chat", {"data": "x" * (10 * 1024 * 1024 + 1), "content_type": "application/json"}, 413, "payload_too_large", "10485760 bytes"),
    ],
)
def test_errors_use_the_envelope(client, method, path, kwargs, status, code, words):
    response = getattr(client, method)(path, **kwargs)
    assert response.status_code == status
    body = response.get_json()
    assert set(body) == {"success", "message", "code", "error"}
    assert (body["success"], body["code"]) == (False, status)
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["code"] == code
    assert words in body["message"]


@pytest.mark.parametrize(
    "text",
    ["\\ud83d\\ude00 paired", "a literal backslash: \\\\ud800", "\\u00e9t\\u00e9"],
)
def test_escaped_text_that_is_valid_unicode_passes(client, text):
    body = '{"stream": false, "messages": [{"role": "user", "content": "%s"}]}' % text
    response = client.post("/api/kernel2/chat", data=body, content_type="application/json")
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["choices"][0]["message"]["content"] == json.loads(f'"{text}"')


def test_internal_errors_say_nothing_of_internals(app, client, monkeypatch):
    def broken(body):
        raise RuntimeError("password=hunter2")

    monkeypatch.setattr("kernel.chat.build_request", broken)
    response = client.post("/api/kernel2/chat", json=HELLO)
    assert response.status_code == 500
    assert "hunter2" not in response.get_data(as_text=True)
    assert response.get_json()["error"] == {
        "message": "Internal server error; the server log has the details.",
        "type": "server_error",
        "param": None,
        "code": "internal_error",
    }


@pytest.mark.parametrize(
    "incoming, kept",
    [("abc-123", True), ("", False), ("x" * 200, False), ("bad\u0001id", False)],
)
def test_request_id(client, incoming, kept):
    response = client.get("/healthz", headers={"X-Request-ID": incoming} if incoming else {})
    request_id = response.headers["X-Request-ID"]
    assert (request_id == incoming) is kept
    if not kept:
        assert request_id.startswith("req_")


def test_models(client):
    assert client.get("/v1/models").get_json() == {
        "object": "list",
        "data": [{"id": "echo", "object": "model", "created": 0, "owned_by": "kernel-chat"}],
    }
