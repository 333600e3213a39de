"""The registry's HTTP API through Flask's test client: instances, authorisation, errors, settings."""

import socket
import threading
import uuid

import pytest

from kernel import create_app
from kernel.config import ConfigError
from kernel.registry import protocol, ws

INSTANCES = "/api/instances"
MESSAGES = [{"role": "user", "content": "hi"}]


def envelope(response, status, code=None):
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert body["success"] is False and body["code"] == status and body["error"]["message"] == body["message"]
    if code is not None:
        assert body["error"]["code"] == code
    return body


@pytest.fixture
def tunnel_instance(client, admin):
    return client.post(INSTANCES, json={"name": "Mine", "description": "at home"}, headers=admin).get_json()


def bearer(secret):
    return {"Authorization": f"Bearer {secret}"}


def test_register_tunnel_and_direct(client, admin, tunnel_instance):
    instance = tunnel_instance
    assert instance["mode"] == "tunnel" and instance["status"] == "offline"
    assert str(uuid.UUID(instance["instance_id"])) == instance["instance_id"]
    assert instance["instance_secret"].startswith("kis_") and len(instance["instance_secret"]) > 40
    assert instance["connect_url"] == f"ws://localhost/api/instances/{instance['instance_id']}/connect"
    direct = client.post(INSTANCES, json={"name": "D", "endpoint": "http://127.0.0.1:9/v1", "api_key": "k",
                                          "model": "m"}, headers=admin)
    assert direct.status_code == 201
    body = direct.get_json()
    assert body["mode"] == "direct" and body["endpoint"] == "http://127.0.0.1:9/v1" and "api_key" not in body
    listed = client.get(INSTANCES, headers=admin).get_json()
    assert listed["total"] == 2 and [i["name"] for i in listed["data"]] == ["Mine", "D"]
    assert all("instance_secret" not in i and "api_key" not in i for i in listed["data"])
    page = client.get(INSTANCES + "?limit=1&offset=1", headers=admin).get_json()
    assert [i["name"] for i in page["data"]] == ["D"]
    envelope(client.get(INSTANCES + "?limit=zero", headers=admin), 422, "invalid_request")


def test_secret_is_stored_only_as_a_hash(app, client, admin, tunnel_instance):
    from kernel.store import connect

    conn = connect(app.extensions["kernel.db_path"])
    row = dict(conn.execute("SELECT * FROM instances").fetchone())
    assert tunnel_instance["instance_secret"] not in row.values()
    assert len(row["secret_sha256"]) == 64


def test_instance_secret_grants_only_its_own_instance(client, admin, tunnel_instance):
    other = client.post(INSTANCES, json={"name": "Other"}, headers=admin).get_json()
    mine = bearer(tunnel_instance["instance_secret"])
    url = f"{INSTANCES}/{tunnel_instance['instance_id']}"
    assert client.get(url, headers=mine).get_json()["name"] == "Mine"
    assert client.patch(url, json={"description": "moved"}, headers=mine).get_json()["description"] == "moved"
    other_url = f"{INSTANCES}/{other['instance_id']}"
    for method in ("get", "patch", "delete"):
        envelope(getattr(client, method)(other_url, json={"name": "x"}, headers=mine), 401)
    envelope(client.get(INSTANCES, headers=mine), 401)
    envelope(client.post(INSTANCES, json={"name": "x"}, headers=mine), 401)
    envelope(client.post(url + "/secret", headers=mine), 401)
    assert client.delete(url, headers=mine).status_code == 204
    envelope(client.get(url, headers=admin), 404, "instance_not_found")


def test_missing_and_wrong_keys_are_401(client, tunnel_instance):
    url = f"{INSTANCES}/{tunnel_instance['instance_id']}"
    for headers in ({}, bearer(""), bearer("nope"), {"Authorization": "Basic abc"}):
        response = client.get(url, headers=headers)
        envelope(response, 401)
        assert response.headers["WWW-Authenticate"] == "Bearer"
    envelope(client.get(INSTANCES), 401)


def test_unknown_instance_is_404(client, admin):
    for instance_id in (str(uuid.uuid4()), "not-a-uuid"):
        envelope(client.get(f"{INSTANCES}/{instance_id}", headers=admin), 404, "instance_not_found")
        envelope(client.patch(f"{INSTANCES}/{instance_id}", json={"name": "x"}, headers=admin), 404)
        envelope(client.delete(f"{INSTANCES}/{instance_id}", headers=admin), 404)
        envelope(client.post(f"{INSTANCES}/{instance_id}/secret", headers=admin), 404)
        envelope(client.post(f"/api/chat/{instance_id}", json={"messages": MESSAGES}), 404, "instance_not_found")


@pytest.mark.parametrize(
    "body, param",
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "x", "endpoint": "ftp://example.org"}, "endpoint"),
        ({"name": "x", "colour": "red"}, None),
        ({"name": "x", "api_key": "k"}, "api_key"),
    ],
)
def test_invalid_registration_is_422(client, admin, body, param):
    assert envelope(client.post(INSTANCES, json=body, headers=admin), 422)["error"]["param"] == param


def test_update_rules(client, admin, tunnel_instance):
    url = f"{INSTANCES}/{tunnel_instance['instance_id']}"
    envelope(client.patch(url, json={}, headers=admin), 422)
    response = client.patch(url, json={"endpoint": "http://x/v1"}, headers=admin)
    assert envelope(response, 422)["error"]["param"] == "endpoint"
    assert client.patch(url, json={"name": "Renamed"}, headers=admin).get_json()["name"] == "Renamed"


def test_rotating_the_secret(client, admin, tunnel_instance):
    url = f"{INSTANCES}/{tunnel_instance['instance_id']}"
    new = client.post(url + "/secret", headers=admin).get_json()["instance_secret"]
    assert new != tunnel_instance["instance_secret"]
    envelope(client.get(url, headers=bearer(tunnel_instance["instance_secret"])), 401)
    assert client.get(url, headers=bearer(new)).status_code == 200


@pytest.mark.parametrize(
    "body, param",
    [
        ({}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"messages": MESSAGES, "temperature": 1.5}, "temperature"),
        ({"messages": MESSAGES, "max_tokens": 0}, "max_tokens"),
        ({"messages": MESSAGES, "metadata": {"enable_l0_retrieval": "yes"}}, "metadata.enable_l0_retrieval"),
    ],
)
def test_invalid_chat_is_422_naming_the_field(client, tunnel_instance, body, param):
    response = client.post(f"/api/chat/{tunnel_instance['instance_id']}/chat/completions", json=body)
    assert envelope(response, 422, "invalid_request")["error"]["param"] == param


def test_chat_body_that_is_not_json_is_422(client, tunnel_instance):
    response = client.post(f"/api/chat/{tunnel_instance['instance_id']}", data="{nope",
                           content_type="application/json")
    envelope(response, 422, "invalid_json")


def test_offline_instances_are_503_with_retry_after(client, admin, tunnel_instance):
    direct = client.post(INSTANCES, json={"name": "D", "endpoint": "http://127.0.0.1:9/v1"}, headers=admin)
    for instance_id in (tunnel_instance["instance_id"], direct.get_json()["instance_id"]):
        response = client.post(f"/api/chat/{instance_id}", json={"messages": MESSAGES})
        assert "offline" in envelope(response, 503, "instance_unavailable")["message"]
        assert int(response.headers["Retry-After"]) >= 1


def test_connect_needs_the_instance_secret_and_an_upgrade(client, admin, tunnel_instance):
    url = f"{INSTANCES}/{tunnel_instance['instance_id']}/connect"
    envelope(client.get(url), 401)
    envelope(client.get(url, headers=admin), 401)  # the admin key is not an instance's secret
    envelope(client.get(url, headers=bearer(tunnel_instance["instance_secret"])), 400, "websocket_required")
    upgrade = {**bearer(tunnel_instance["instance_secret"]), "Connection": "Upgrade", "Upgrade": "websocket",
               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "13"}
    envelope(client.get(url, headers=upgrade), 503, "instance_unavailable")  # no gunicorn socket here
    direct = client.post(INSTANCES, json={"name": "D", "endpoint": "http://127.0.0.1:9/v1"}, headers=admin).get_json()
    direct_url = f"{INSTANCES}/{direct['instance_id']}/connect"
    envelope(client.get(direct_url, headers={**upgrade, **bearer(direct["instance_secret"])}), 409, "not_a_tunnel")


def test_several_workers_turn_tunnels_off_or_refuse_to_start(tmp_path):
    config = {"KERNEL_BACKEND": "echo", "KERNEL_DATA_DIR": str(tmp_path), "KERNEL_WORKERS": 2}
    with pytest.raises(ConfigError, match="KERNEL_TUNNELS=on with KERNEL_WORKERS=2"):
        create_app({**config, "KERNEL_TUNNELS": "on"})
    app = create_app(config)  # auto: direct instances only
    client = app.test_client()
    admin = bearer(app.extensions["kernel.admin_key"])
    instance = client.post(INSTANCES, json={"name": "T"}, headers=admin).get_json()
    response = client.post(f"/api/chat/{instance['instance_id']}", json={"messages": MESSAGES})
    assert "2 workers" in envelope(response, 503, "instance_unavailable")["message"]


# -- the WebSocket layer, on a socket pair ---------------------------------------------------------------

def _pair(max_message_bytes=1024):
    """A registry-side WebSocket and a raw client socket that has completed the handshake."""
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import Request

    server_sock, client_sock = socket.socketpair()
    client = WSConnection(ConnectionType.CLIENT)
    request = client.send(Request(host="x", target="/connect")).decode("latin-1")
    environ = {"RAW_URI": "/connect"}
    for line in request.split("\r\n")[1:]:
        if line:
            name, _, value = line.partition(": ")
            environ["HTTP_" + name.upper().replace("-", "_")] = value
    server = ws.accept(server_sock, ws.upgrade_request(environ), max_message_bytes)
    client.receive_data(client_sock.recv(65536))
    list(client.events())
    return server, client, client_sock


def test_oversized_message_closes_with_1009_before_it_is_buffered():
    from wsproto.events import TextMessage

    server, client, sock = _pair(max_message_bytes=1024)
    threading.Thread(target=lambda: sock.sendall(client.send(TextMessage(data="x" * 100_000))), daemon=True).start()
    with pytest.raises(ws.Closed) as closed:
        server.receive()
    assert closed.value.code == ws.MESSAGE_TOO_BIG
    assert server._size <= 1024 + ws.READ_SIZE


def test_binary_and_broken_frames_close_the_connection():
    from wsproto.events import BytesMessage, TextMessage

    server, client, sock = _pair()
    sock.sendall(client.send(TextMessage(data='{"type":"hello","version":1}')))
    assert protocol.loads(server.receive()) == {"type": "hello", "version": 1}
    sock.sendall(client.send(BytesMessage(data=b"\x00\x01")))
    with pytest.raises(ws.Closed) as closed:
        server.receive()
    assert closed.value.code == ws.UNSUPPORTED_DATA
    server, client, sock = _pair()
    sock.sendall(b"\x0f\xff garbage that is no frame")
    with pytest.raises(ws.Closed) as closed:
        server.receive()
    assert closed.value.code == ws.PROTOCOL_ERROR


@pytest.mark.parametrize("text", ["not json", "[1, 2]", '{"no": "type"}'])
def test_protocol_rejects_messages_that_are_not_typed_objects(text):
    with pytest.raises(protocol.BadMessage):
        protocol.loads(text)
