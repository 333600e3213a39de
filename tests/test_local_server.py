"""The server on the embedded local model, as `make run` starts it (no backend named, no upstream)."""

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
import requests

QUESTION = [{"role": "user", "content": "Tell me about artificial intelligence."}]


@pytest.fixture(scope="module")
def local_server(start_server):
    return start_server(KERNEL_LOCAL_QUEUE=2)  # KERNEL_BACKEND defaults to auto


def test_auto_picks_the_local_model(local_server):
    models = requests.get(local_server.url + "/v1/models", timeout=5).json()["data"]
    assert [m["id"] for m in models] == ["Smollm2 135M 8k Lc100K Mix1 Ep2"]
    assert "using the 'local' backend" in local_server.log()
    assert requests.get(local_server.url + "/readyz", timeout=5).json()["backend"] == "local"


def test_sdk_chats_with_the_local_model(local_server):
    client = openai.OpenAI(base_url=local_server.url + "/v1", api_key="unused", max_retries=0)
    chunks = list(client.chat.completions.create(
        model="any", messages=QUESTION, stream=True, max_tokens=30, temperature=0,
        stream_options={"include_usage": True},
    ))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "intelligence" in text.lower()
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].usage.completion_tokens <= 30 and chunks[-1].usage.prompt_tokens > 20
    completion = client.chat.completions.create(model="any", messages=QUESTION, max_tokens=30, temperature=0)
    assert completion.choices[0].message.content == text


def test_health_answers_quickly_while_the_model_generates(local_server):
    done = threading.Event()

    def generate():
        local_server.post("/api/kernel2/chat", {"messages": QUESTION, "max_tokens": 300, "stream": False}, timeout=60)
        done.set()

    threading.Thread(target=generate).start()
    time.sleep(0.3)
    latencies = []
    session = requests.Session()
    while not done.is_set() and len(latencies) < 100:
        started = time.perf_counter()
        assert session.get(local_server.url + "/healthz", timeout=5).status_code == 200
        latencies.append(time.perf_counter() - started)
        time.sleep(0.02)
    assert len(latencies) >= 10, "the generation ended before it could be measured"
    assert max(latencies) < 0.05


def test_a_departed_client_frees_the_model(local_server):
    sock = socket.create_connection(("127.0.0.1", local_server.port), timeout=30)
    body = json.dumps({"messages": QUESTION, "max_tokens": 2000, "temperature": 0}).encode()
    sock.sendall(b"POST /api/kernel2/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    received = b""
    while received.count(b'"content":"') < 4:
        received += sock.recv(65536)
    sock.close()
    started = time.perf_counter()
    response = local_server.post("/api/kernel2/chat", {"messages": QUESTION, "max_tokens": 2, "stream": False})
    assert response.status_code == 200
    # had the first generation gone on, this one would wait for up to 2000 tokens (~20 s)
    assert time.perf_counter() - started < 2.0
    assert "generation stopped after" in local_server.log()


def test_past_the_queue_bound_is_503_with_retry_after(local_server):
    def ask(_):
        return local_server.post(
            "/api/kernel2/chat", {"messages": QUESTION, "max_tokens": 60, "stream": False}, timeout=60
        )

    with ThreadPoolExecutor(max_workers=6) as pool:
        responses = list(pool.map(ask, range(6)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) >= 3  # one running and two waiting (KERNEL_LOCAL_QUEUE=2)
    rejected = [r for r in responses if r.status_code == 503]
    assert rejected, statuses
    assert all(r.headers["Retry-After"] == "5" and r.json()["error"]["code"] == "backend_unavailable" for r in rejected)


def test_without_any_backend_the_server_refuses_to_start(tmp_path):
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT, free_port

    env = {k: v for k, v in os.environ.items() if not k.startswith("KERNEL_")}
    env.update(KERNEL_BIND=f"127.0.0.1:{free_port()}", KERNEL_DATA_DIR=str(tmp_path),
               KERNEL_LOCAL_MODEL_PATH=str(tmp_path / "missing.gguf"))
    result = subprocess.run([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "app:app"], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "No model to serve. Either set KERNEL_UPSTREAM_URL" in result.stderr + result.stdout
