"""Roles and L0 knowledge through the real server: what the upstream receives, restarts, many workers."""

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

ADMIN_KEY = "test-admin-key"
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
QUESTION = "Where did I leave the spare bicycle key?"


def last_body(upstream, model):
    return next(b for b in reversed(upstream.stats.bodies) if b.get("model") == model)


@pytest.fixture(scope="module")
def knowing(start_server, upstream, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("knowing")
    server = start_server(
        KERNEL_BACKEND="openai", KERNEL_UPSTREAM_URL=upstream.url, KERNEL_ADMIN_KEY=ADMIN_KEY,
        KERNEL_DATA_DIR=data_dir, KERNEL_WORKERS=2,
    )
    for i in range(30):
        server.post("/api/kernel2/documents", {"title": f"Filler {i}", "content": f"Ordinary note {i} about groceries."},
                    headers=AUTH)
    server.post(
        "/api/kernel2/documents",
        {"title": "House notes", "content": "The spare bicycle key hangs on the hook behind the pantry door."},
        headers=AUTH,
    )
    role = server.post(
        "/api/kernel2/roles", {"name": "Me", "system_prompt": "You are my second self."}, headers=AUTH
    ).json()
    server.role_id = role["role_id"]
    return server


@pytest.mark.parametrize(
    "metadata, system_starts, has_section",
    [
        ({"role_id": "ROLE"}, "You are my second self.", False),
        ({"enable_l0_retrieval": True}, "Client prompt.\n\n<reference_knowledge>", True),
        ({"role_id": "ROLE", "enable_l0_retrieval": True}, "You are my second self.\n\n<reference_knowledge>", True),
        ({}, "Client prompt.", False),
    ],
)
def test_what_the_upstream_receives(knowing, upstream, metadata, system_starts, has_section):
    metadata = {k: (knowing.role_id if v == "ROLE" else v) for k, v in metadata.items()}
    model = f"record-{len(upstream.stats.bodies)}"
    messages = [{"role": "system", "content": "Client prompt."}, {"role": "user", "content": QUESTION}]
    response = knowing.post("/api/kernel2/chat", {"messages": messages, "metadata": metadata, "model": model})
    assert response.status_code == 200
    sent = last_body(upstream, model)["messages"]
    assert [m["role"] for m in sent] == ["system", "user"]
    assert sent[0]["content"].startswith(system_starts)
    assert ('From "House notes":\nThe spare bicycle key hangs' in sent[0]["content"]) is has_section
    assert sent[1] == {"role": "user", "content": QUESTION}


def test_unknown_role_is_404_before_any_stream(knowing):
    response = knowing.post(
        "/api/kernel2/chat",
        {"messages": [{"role": "user", "content": "hi"}], "metadata": {"role_id": "00000000-0000-4000-8000-000000000000"}},
    )
    assert response.status_code == 404
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["error"] == {
        "message": "No role with id '00000000-0000-4000-8000-000000000000'",
        "type": "not_found_error",
        "param": "metadata.role_id",
        "code": "role_not_found",
    }


def test_sdk_sends_metadata_through_extra_body(knowing, upstream):
    import openai

    client = openai.OpenAI(base_url=knowing.url + "/v1", api_key="unused", max_retries=0)
    client.chat.completions.create(
        model="sdk-metadata", messages=[{"role": "user", "content": QUESTION}],
        extra_body={"metadata": {"role_id": knowing.role_id, "enable_l0_retrieval": True}},
    )
    assert last_body(upstream, "sdk-metadata")["messages"][0]["content"].startswith("You are my second self.")


def test_data_survives_a_restart(start_server, upstream, tmp_path):
    first = start_server(KERNEL_BACKEND="echo", KERNEL_DATA_DIR=tmp_path, KERNEL_ADMIN_KEY=ADMIN_KEY)
    role = first.post("/api/kernel2/roles", {"name": "Keeper", "system_prompt": "p"}, headers=AUTH).json()
    document = first.post("/api/kernel2/documents", {"title": "T", "content": "persistent words"}, headers=AUTH).json()
    first.stop()
    second = start_server(KERNEL_BACKEND="echo", KERNEL_DATA_DIR=tmp_path, KERNEL_ADMIN_KEY=ADMIN_KEY)
    assert requests.get(f"{second.url}/api/kernel2/roles/{role['role_id']}", headers=AUTH, timeout=5).json() == role
    fetched = requests.get(f"{second.url}/api/kernel2/documents/{document['document_id']}", headers=AUTH, timeout=5)
    assert fetched.json()["content"] == "persistent words"


def test_generated_admin_key_is_shared_by_workers_and_kept(start_server, tmp_path):
    server = start_server(KERNEL_BACKEND="echo", KERNEL_DATA_DIR=tmp_path, KERNEL_WORKERS=4)
    key = (tmp_path / "admin.key").read_text().strip()
    headers = {"Authorization": f"Bearer {key}"}
    statuses = {requests.get(server.url + "/api/kernel2/roles", headers=headers, timeout=5).status_code for _ in range(20)}
    assert statuses == {200}
    assert server.log().count("generated an admin key") == 1
    assert requests.get(server.url + "/api/kernel2/roles", timeout=5).status_code == 401


def test_four_workers_writing_at_once_lose_nothing(start_server, tmp_path):
    server = start_server(KERNEL_BACKEND="echo", KERNEL_DATA_DIR=tmp_path, KERNEL_ADMIN_KEY=ADMIN_KEY, KERNEL_WORKERS=4)

    def create_role(i):
        body = {"name": f"role {i}", "system_prompt": f"p{i}"}
        return requests.post(f"{server.url}/api/kernel2/roles", json=body, headers=AUTH, timeout=30).status_code

    def add_document(task):
        i, copy = task  # two copies of each document race each other
        body = {"title": f"doc {i} copy {copy}", "content": f"Document number {i}. " + "Some words. " * 200}
        response = requests.post(f"{server.url}/api/kernel2/documents", json=body, headers=AUTH, timeout=30)
        return i, response.status_code, response.json()["document_id"]

    with ThreadPoolExecutor(max_workers=32) as pool:
        role_statuses = list(pool.map(create_role, range(200)))
        documents = list(pool.map(add_document, [(i, copy) for i in range(200) for copy in (0, 1)]))
    assert role_statuses == [201] * 200
    for i in range(200):
        copies = [(status, document_id) for j, status, document_id in documents if j == i]
        assert sorted(status for status, _ in copies) == [200, 201]
        assert copies[0][1] == copies[1][1]
    roles = requests.get(f"{server.url}/api/kernel2/roles", headers=AUTH, timeout=10).json()["data"]
    assert sorted(r["name"] for r in roles) == sorted(f"role {i}" for i in range(200))
    page = requests.get(f"{server.url}/api/kernel2/documents?limit=200", headers=AUTH, timeout=10).json()
    assert page["total"] == 200 and len({d["sha256"] for d in page["data"]}) == 200
    assert "database is locked" not in server.log() and "Traceback" not in server.log()
    pids = {line.split("[")[2].split("]")[0] for line in server.log().splitlines() if "Booting worker" in line}
    assert len(pids) == 4


def test_adding_a_large_document_does_not_stall_the_worker(start_server, tmp_path):
    """Chunking and indexing run off the event loop: other requests on the same worker keep flowing.

    (Run on the loop, this 7 MB document held every other request of the worker for about 600 ms.)
    """
    import random
    import threading
    import time

    server = start_server(KERNEL_BACKEND="echo", KERNEL_DATA_DIR=tmp_path, KERNEL_ADMIN_KEY=ADMIN_KEY)
    rng = random.Random(1)
    words = [f"word{i}" for i in range(5000)]
    text = "\n\n".join(" ".join(rng.choice(words) for _ in range(80)) + "." for _ in range(9000))
    latencies, done = [], threading.Event()

    def probe():
        session = requests.Session()
        while not done.is_set():
            started = time.perf_counter()
            session.get(server.url + "/healthz", timeout=10)
            latencies.append(time.perf_counter() - started)
            time.sleep(0.005)

    prober = threading.Thread(target=probe)
    prober.start()
    time.sleep(0.2)
    response = requests.post(server.url + "/api/kernel2/documents", json={"title": "big", "content": text},
                             headers=AUTH, timeout=60)
    done.set()
    prober.join()
    assert response.status_code == 201 and response.json()["chunk_count"] == 9000
    assert max(latencies) < 0.25
