import multiprocessing
import stat

from kernel import auth, create_app


def test_a_key_is_generated_once_with_private_permissions(tmp_path):
    key = auth.load_or_create_key(tmp_path)
    path = tmp_path / "admin.key"
    assert len(key) >= 40
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert auth.load_or_create_key(tmp_path) == key
    assert [p.name for p in tmp_path.iterdir()] == ["admin.key"]


def _load(directory, queue):
    queue.put(auth.load_or_create_key(directory))


def test_workers_starting_together_agree_on_one_key(tmp_path):
    queue = multiprocessing.get_context("fork").Queue()
    processes = [multiprocessing.get_context("fork").Process(target=_load, args=(tmp_path, queue)) for _ in range(8)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(10)
    keys = {queue.get(timeout=5) for _ in processes}
    assert len(keys) == 1
    assert keys == {(tmp_path / "admin.key").read_text().strip()}


def test_configured_key_wins_and_nothing_is_written(tmp_path):
    app = create_app({"KERNEL_BACKEND": "echo", "KERNEL_DATA_DIR": str(tmp_path), "KERNEL_ADMIN_KEY": "s3cret"})
    client = app.test_client()
    assert not (tmp_path / "admin.key").exists()
    assert client.get("/api/kernel2/roles", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.get("/api/kernel2/roles", headers={"Authorization": "bearer s3cret"}).status_code == 200
    assert client.get("/api/kernel2/roles", headers={"Authorization": "Bearer s3cret2"}).status_code == 401


def test_chat_stays_open(client):
    response = client.post("/api/kernel2/chat", json={"messages": [{"role": "user", "content": "hi"}], "stream": False})
    assert response.status_code == 200
