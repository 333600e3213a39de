import pytest

ROLES = "/api/kernel2/roles"
ALICE = {"name": "Alice", "system_prompt": "You are Alice, a gardener.", "description": "garden helper"}


@pytest.fixture
def alice(client, admin):
    return client.post(ROLES, json=ALICE, headers=admin).get_json()


def test_create(client, admin):
    response = client.post(ROLES, json=ALICE, headers=admin)
    assert response.status_code == 201
    role = response.get_json()
    assert set(role) == {"role_id", "name", "description", "system_prompt", "enable_l0_retrieval", "is_default", "created_at", "updated_at"}
    assert role["enable_l0_retrieval"] is False
    assert len(role["role_id"]) == 36 and role["role_id"][14] == "4"  # a UUID4


def test_read_list_update_delete(client, admin, alice):
    url = f"{ROLES}/{alice['role_id']}"
    assert client.get(url, headers=admin).get_json() == alice
    assert client.get(ROLES, headers=admin).get_json() == {"object": "list", "data": [alice], "default_role_id": None}
    changed = client.patch(url, json={"enable_l0_retrieval": True}, headers=admin).get_json()
    assert changed["enable_l0_retrieval"] is True and changed["system_prompt"] == ALICE["system_prompt"]
    assert client.delete(url, headers=admin).status_code == 204
    assert client.get(url, headers=admin).status_code == 404
    assert client.delete(url, headers=admin).status_code == 404


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("post", ROLES, ALICE),
        ("get", ROLES, None),
        ("get", f"{ROLES}/00000000-0000-4000-8000-000000000000", None),
        ("patch", f"{ROLES}/00000000-0000-4000-8000-000000000000", {"name": "x"}),
        ("delete", f"{ROLES}/00000000-0000-4000-8000-000000000000", None),
    ],
)
@pytest.mark.parametrize(
    "authorization, message",
    [
        (None, "needs the admin key"),
        ("Bearer", "needs the admin key"),
        ("Basic abc", "needs the admin key"),
        ("Bearer wrong-key", "not valid"),
    ],
)
def test_every_route_needs_the_admin_key(client, method, path, body, authorization, message):
    headers = {"Authorization": authorization} if authorization else {}
    response = getattr(client, method)(path, json=body, headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert message in response.get_json()["message"]
    assert response.get_json()["error"]["type"] == "authentication_error"


def test_one_default_role_at_a_time(client, admin, alice):
    bob = client.post(ROLES, json={"name": "Bob", "system_prompt": "You are Bob.", "is_default": True}, headers=admin)
    assert bob.status_code == 201 and bob.get_json()["is_default"] is True
    listed = client.get(ROLES, headers=admin).get_json()
    assert listed["default_role_id"] == bob.get_json()["role_id"]
    marked = client.patch(f"{ROLES}/{alice['role_id']}", json={"is_default": True}, headers=admin).get_json()
    assert marked["is_default"] is True
    listed = client.get(ROLES, headers=admin).get_json()
    assert listed["default_role_id"] == alice["role_id"]
    assert [r["is_default"] for r in listed["data"]] == [True, False]
    client.patch(f"{ROLES}/{alice['role_id']}", json={"is_default": False}, headers=admin)
    assert client.get(ROLES, headers=admin).get_json()["default_role_id"] is None


def test_duplicate_name_is_409(client, admin, alice):
    response = client.post(ROLES, json={**ALICE, "name": "alice"}, headers=admin)
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "conflict"
    bob = client.post(ROLES, json={**ALICE, "name": "Bob"}, headers=admin).get_json()
    assert client.patch(f"{ROLES}/{bob['role_id']}", json={"name": "ALICE"}, headers=admin).status_code == 409


@pytest.mark.parametrize(
    "body, param",
    [
        ({"system_prompt": "x"}, "name"),
        ({"name": "x"}, "system_prompt"),
        ({**ALICE, "name": ""}, "name"),
        ({**ALICE, "name": "   "}, "name"),
        ({**ALICE, "name": "n" * 101}, "name"),
        ({**ALICE, "description": "d" * 501}, "description"),
        ({**ALICE, "system_prompt": ""}, "system_prompt"),
        ({**ALICE, "enable_l0_retrieval": "yes"}, "enable_l0_retrieval"),
        ({**ALICE, "systemPrompt": "typo"}, None),
        ([ALICE], None),
    ],
)
def test_create_schema_errors(client, admin, body, param):
    response = client.post(ROLES, json=body, headers=admin)
    assert response.status_code == 400
    assert response.get_json()["error"]["param"] == param


@pytest.mark.parametrize("body", [{}, {"role_id": "x"}, {"name": 5}])
def test_update_schema_errors(client, admin, alice, body):
    assert client.patch(f"{ROLES}/{alice['role_id']}", json=body, headers=admin).status_code == 400


@pytest.mark.parametrize("role_id", ["nope", "role_abc123", "00000000-0000-4000-8000-000000000000"])
def test_unknown_role_is_404(client, admin, role_id):
    response = client.get(f"{ROLES}/{role_id}", headers=admin)
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"


def test_a_locked_database_is_503_with_retry_after(app, client, admin, monkeypatch):
    import sqlite3

    def locked(conn):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr("kernel.store.roles.list_all", locked)
    response = client.get(ROLES, headers=admin)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert response.get_json()["message"] == "The database is busy; try again"


def test_a_writer_that_waits_too_long_is_503(app, client, admin, monkeypatch):
    from kernel import store

    holder = store.connect(app.extensions["kernel.db_path"])
    holder.execute("BEGIN IMMEDIATE")
    monkeypatch.setattr(store, "BUSY_TIMEOUT_MS", 50)
    try:
        response = client.post(ROLES, json=ALICE, headers=admin)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert client.post(ROLES, json=ALICE, headers=admin).status_code == 201
