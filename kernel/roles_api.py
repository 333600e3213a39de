"""Roles: ``/api/kernel2/roles`` — stored personas for ``metadata.role_id``. Admin key required.

``"is_default": true`` (on create or PATCH) makes a role the instance's default persona, the one the
reserved id ``default_role`` names; the list says which it is in ``default_role_id``.
"""

from flask import Blueprint, jsonify

from .auth import require_admin
from .db import get_db, offload
from .schema import validated_body
from .store import roles

bp = Blueprint("roles", __name__, url_prefix="/api/kernel2/roles")
bp.before_request(require_admin)


@bp.post("")
def create_role():
    body = validated_body("role_create")
    return jsonify(offload(roles.create, get_db(), **body)), 201


@bp.get("")
def list_roles():
    data = roles.list_all(get_db())
    default = next((role["role_id"] for role in data if role["is_default"]), None)
    return jsonify({"object": "list", "data": data, "default_role_id": default})


@bp.get("/<role_id>")
def get_role(role_id):
    return jsonify(roles.get(get_db(), role_id))


@bp.patch("/<role_id>")
def update_role(role_id):
    body = validated_body("role_update")
    return jsonify(offload(roles.update, get_db(), role_id, **body))


@bp.delete("/<role_id>")
def delete_role(role_id):
    offload(roles.delete, get_db(), role_id)
    return "", 204


def init_app(app):
    app.register_blueprint(bp)
