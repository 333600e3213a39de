"""Instances: ``/api/instances`` — register, list, inspect, change, delete; and the tunnel's WebSocket.

The admin key can do everything. An instance's own secret (``instance_secret``, shown once) lets that
instance read, change and delete itself and open its tunnel, and nothing else.
"""

import hmac
import logging

from flask import Blueprint, Response, current_app, jsonify, request

from kernel.auth import require_admin
from kernel.db import get_db, offload
from kernel.errors import ApiError, error_response
from kernel.schema import page_arguments, validated_body
from kernel.store import NotFound

from . import ws
from . import store as instances
from .tunnel import TunnelConnection

log = logging.getLogger("kernel.registry")

bp = Blueprint("instances", __name__, url_prefix="/api/instances")

UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}


def registry():
    return current_app.extensions["kernel.registry"]


def _bearer():
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    given = given.strip()
    if scheme.lower() != "bearer" or not given:
        raise ApiError(401, "This endpoint needs the admin key or the instance's secret: Authorization: Bearer <key>",
                       headers=UNAUTHORIZED)
    return given


def _is_admin(given):
    return hmac.compare_digest(given.encode(), current_app.extensions["kernel.admin_key"].encode())


def _authorize(instance_id, admin_allowed=True):
    """Let the request through with the admin key or this instance's secret; 401 otherwise."""
    given = _bearer()
    if admin_allowed and _is_admin(given):
        instances.get(get_db(), instance_id)  # 404 for the admin, who may know which ids exist
        return "admin"
    if instances.secret_matches(get_db(), instance_id, given):
        return "instance"
    raise ApiError(401, "The key is not valid for this instance", headers=UNAUTHORIZED)


def _connect_url(instance_id):
    base = request.host_url.rstrip("/")
    return "ws" + base[4:] + f"/api/instances/{instance_id}/connect" if base.startswith("http") else base


@bp.errorhandler(NotFound)
def not_found(exc):
    instance_id = (request.view_args or {}).get("instance_id", "")
    return error_response(404, f"No instance with id {instance_id!r}", code="instance_not_found")


@bp.post("")
def create_instance():
    require_admin()
    body = validated_body("instance_create", status=422)
    if "endpoint" not in body and ("api_key" in body):
        raise ApiError(422, "api_key: only a direct instance (one with an endpoint) has an API key",
                       code="invalid_request", param="api_key")
    instance, secret = offload(instances.create, get_db(), **body)
    registry().probe_soon(instance["instance_id"])
    log.info("instance %s registered (%s)", instance["instance_id"], instance["mode"])
    return jsonify({**instance, "instance_secret": secret, "connect_url": _connect_url(instance["instance_id"])}), 201


@bp.get("")
def list_instances():
    require_admin()
    limit, offset = page_arguments(status=422)
    data, total = instances.page(get_db(), limit, offset)
    return jsonify({"object": "list", "data": data, "total": total, "limit": limit, "offset": offset})


@bp.get("/<instance_id>")
def get_instance(instance_id):
    _authorize(instance_id)
    return jsonify(instances.get(get_db(), instance_id))


@bp.patch("/<instance_id>")
def update_instance(instance_id):
    _authorize(instance_id)
    body = validated_body("instance_update", status=422)
    current = instances.get(get_db(), instance_id)
    if current["mode"] == "tunnel":
        for name in ("endpoint", "api_key"):
            if name in body:
                raise ApiError(422, f"{name}: a tunnel instance has no {name}; register a direct instance instead",
                               code="invalid_request", param=name)
    elif "endpoint" in body and not body["endpoint"]:
        raise ApiError(422, "endpoint: a direct instance needs an endpoint", code="invalid_request", param="endpoint")
    instance = offload(instances.update, get_db(), instance_id, **body)
    if instance["mode"] == "direct":
        registry().probe_soon(instance_id)
    return jsonify(instance)


@bp.delete("/<instance_id>")
def delete_instance(instance_id):
    _authorize(instance_id)
    offload(instances.delete, get_db(), instance_id)
    registry().forget(instance_id, "the instance was deleted")
    log.info("instance %s deleted", instance_id)
    return "", 204


@bp.post("/<instance_id>/secret")
def rotate_secret(instance_id):
    require_admin()
    secret = offload(instances.rotate_secret, get_db(), instance_id)
    registry().forget(instance_id, "the instance's secret was changed")
    return jsonify({"instance_id": instance_id, "instance_secret": secret})


# -- the tunnel -----------------------------------------------------------------------------------------

class _AlreadyAnswered(Response):
    """What a view returns after it has used the socket itself: gunicorn writes nothing more, and closes."""

    def __call__(self, environ, start_response):
        raise StopIteration()


def _tunnel_instance(instance_id):
    """The instance about to open its tunnel, once its secret and this registry's settings allow it."""
    given = _bearer()
    if not instances.secret_matches(get_db(), instance_id, given):
        instances.get(get_db(), instance_id)  # unknown: 404
        raise ApiError(401, "The instance secret is not valid", headers=UNAUTHORIZED)
    state = registry()
    if not state.tunnels:
        raise state.unavailable(state.tunnels_off)
    if state.hub.closing:
        raise state.unavailable("This registry is restarting; connect again in a moment")
    row = instances.get_full(get_db(), instance_id)
    if row["mode"] != "tunnel":
        raise ApiError(409, "This is a direct instance: the registry calls its endpoint; it has no tunnel",
                       code="not_a_tunnel")
    return state, row


@bp.get("/<instance_id>/connect")
def connect_without_upgrade(instance_id):
    _tunnel_instance(instance_id)
    raise ApiError(400, "This endpoint opens the instance's tunnel: it needs a WebSocket upgrade request "
                   "(the connector, `flask --app app connect`, makes one)", code="websocket_required")


@bp.route("/<instance_id>/connect", methods=["GET"], websocket=True)
def connect(instance_id):
    state, row = _tunnel_instance(instance_id)
    sock = request.environ.get("gunicorn.socket")
    if sock is None:
        raise state.unavailable("Tunnels need the server to run under gunicorn with the gevent worker")
    try:
        handshake = ws.upgrade_request(request.environ)
    except ValueError as exc:
        raise ApiError(400, f"This endpoint needs a WebSocket upgrade request: {exc}",
                       code="websocket_required") from None
    config = current_app.config
    sock.settimeout(config["KERNEL_TUNNEL_TIMEOUT_S"])  # bounds writes to an instance that stops reading
    websocket = ws.accept(sock, handshake, config["KERNEL_TUNNEL_MAX_MESSAGE_BYTES"])
    connection = TunnelConnection(row["instance_id"], websocket, config)
    _serve(state, connection, request.remote_addr)
    return _AlreadyAnswered()


def _serve(state, connection, peer):
    instance_id = connection.instance_id
    try:
        connection.handshake()
    except ws.Closed as exc:
        log.warning("instance %s: tunnel handshake from %s failed: %s", instance_id, peer, exc)
        connection.ws.release()
        return
    state.hub.attach(connection)
    reason = "the registry failed to record it"
    try:
        offload(instances.tunnel_online, get_db(), instance_id, connection.connection_id)
        log.info("instance %s online: tunnel from %s (protocol v%s)", instance_id, peer, connection.version)
        reason = connection.serve()
    finally:
        if connection.open:  # serve() never ran
            connection.ws.close(ws.GOING_AWAY, reason)
            connection.ws.release()
        if state.hub.detach(connection):
            offload(instances.tunnel_offline, get_db(), instance_id, connection.connection_id)
            log.info("instance %s offline: tunnel closed (%s)", instance_id, reason)
        else:
            log.info("instance %s: old tunnel closed (%s)", instance_id, reason)


def init_app(app):
    app.register_blueprint(bp)
