"""The documented examples, sent verbatim to a running server: each streams an answer ending in [DONE],
except seed 000's placeholder role id, which gets the documented 404."""

import json

import pytest
import requests

from tests.conftest import sse_events
from tests.seed_examples import (
    KERNEL2_CURL,
    KERNEL2_PARAMETERS,
    REGISTRY_CURL,
    REGISTRY_PYTHON,
    http_client_example,
)

KERNEL2 = "/api/kernel2/chat"
CURL_HEADERS = {"Content-Type": "application/json", "Accept": "text/event-stream"}


def post_raw(server, text):
    return requests.post(server.url + KERNEL2, data=text.encode(), headers=CURL_HEADERS, stream=True, timeout=30)


@pytest.mark.parametrize("text", [KERNEL2_CURL, REGISTRY_CURL], ids=["seed000-curl", "seed001-curl"])
def test_curl_examples_stream_an_answer(server, text):
    response = post_raw(server, text)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    events = sse_events(response)
    assert events[-1] == "[DONE]"
    answer = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1] if e["choices"])
    assert answer == json.loads(text)["messages"][-1]["content"]  # the test upstream echoes


def test_seed001_python_example_streams_an_answer(server):
    host = server.url.split("//", 1)[1]
    printed, done = http_client_example(host, KERNEL2, REGISTRY_PYTHON)
    assert done and printed == "Hello, please introduce yourself."


def test_seed000_placeholder_role_id_is_the_documented_404(server):
    response = post_raw(server, KERNEL2_PARAMETERS)
    assert response.status_code == 404
    body = response.json()
    assert body["success"] is False and body["code"] == 404
    assert body["error"]["param"] == "metadata.role_id" and "uuid-string" in body["message"]


def test_default_role_follows_the_marked_role(server, upstream):
    key = (server.data_dir / "admin.key").read_text().strip()
    admin = {"Authorization": f"Bearer {key}"}
    role = requests.post(server.url + "/api/kernel2/roles", headers=admin, timeout=10,
                         json={"name": "Seed persona", "system_prompt": "You are my second self.", "is_default": True})
    assert role.status_code == 201
    try:
        sse_events(post_raw(server, REGISTRY_CURL))
        assert upstream.stats.bodies[-1]["messages"][0] == {"role": "system", "content": "You are my second self."}
    finally:
        requests.delete(f"{server.url}/api/kernel2/roles/{role.json()['role_id']}", headers=admin, timeout=10)
    sse_events(post_raw(server, REGISTRY_CURL))
    assert upstream.stats.bodies[-1]["messages"][0] == {"role": "system", "content": "You are a helpful assistant."}
