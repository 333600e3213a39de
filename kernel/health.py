"""Liveness and readiness probes for process managers and load balancers."""

from flask import Blueprint, current_app, jsonify

from . import backends

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    """The process is up and serving; the backend is not consulted."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz():
    """The backend can serve now; a :class:`BackendError` becomes the 503/504 envelope."""
    backend = backends.loaded(current_app.extensions, current_app.config)
    backend.check_ready()
    return jsonify({"status": "ready", "backend": backend.name})


def init_app(app):
    app.register_blueprint(bp)
