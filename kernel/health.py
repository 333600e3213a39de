"""Liveness and readiness probes for process managers and load balancers."""

from flask import Blueprint, current_app, jsonify

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    """The process is up and serving; the backend is not consulted."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz():
    """The backend can serve now; a :class:`BackendError` becomes the 503/504 envelope."""
    backend = current_app.extensions["kernel.backend"]
    backend.check_ready()
    return jsonify({"status": "ready", "backend": backend.name})


def init_app(app):
    app.register_blueprint(bp)
