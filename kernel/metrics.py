"""``GET /metrics``: Prometheus metrics, with ``prometheus_client``.

Under gunicorn every worker writes its figures to files in ``PROMETHEUS_MULTIPROC_DIR`` (gunicorn.conf.py
sets it inside the data directory and empties it at start) and a scrape adds up all workers'; elsewhere
(tests, the Flask CLI) the figures are this process's. The instruments are module-level, as loggers are:
one set per process, whatever the number of apps.

Who may read ``/metrics`` is ``KERNEL_METRICS_ALLOW``: networks (comma-separated CIDRs), ``any``, or by
default loopback only; others get 403.
"""

import ipaddress

from flask import Blueprint, Response, current_app, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily

from .errors import ApiError
from .instruments import (
    BACKEND_ERRORS,
    FIRST_CHUNK,
    LATENCY,
    LOCAL_QUEUE,
    MULTIPROCESS,
    REQUESTS,
    STREAMS,
    TOKENS,
    TUNNEL_CHATS,
    observe,
)

class _Instances:
    """Registry instances by status, read from the database at scrape time (the same for every worker)."""

    def __init__(self, db_path):
        self.db_path = db_path

    def collect(self):
        from . import store

        family = GaugeMetricFamily("kernel_registry_instances", "Registered instances, by status", labels=["status"])
        conn = store.connect(self.db_path)
        try:
            counts = dict(conn.execute("SELECT status, count(*) FROM instances GROUP BY status").fetchall())
        finally:
            conn.close()
        for status in ("online", "offline"):
            family.add_metric([status], counts.get(status, 0))
        yield family


bp = Blueprint("metrics", __name__)


def _allowed(address, networks):
    if networks is None:
        return True
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    return any(ip in network for network in networks)


@bp.get("/metrics")
def metrics():
    if not _allowed(request.remote_addr, current_app.extensions["kernel.metrics_allow"]):
        raise ApiError(403, "Metrics are not open to this address; see KERNEL_METRICS_ALLOW", code="forbidden")
    registry = CollectorRegistry()
    if MULTIPROCESS:
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry)
    else:
        for instrument in (REQUESTS, LATENCY, FIRST_CHUNK, TOKENS, BACKEND_ERRORS, STREAMS, LOCAL_QUEUE, TUNNEL_CHATS):
            registry.register(instrument)
    registry.register(_Instances(current_app.extensions["kernel.db_path"]))
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


def _networks(value):
    value = value.strip().lower()
    if value == "any":
        return None
    return [ipaddress.ip_network(part.strip(), strict=False) for part in value.split(",") if part.strip()]


def init_app(app):
    app.extensions["kernel.metrics_allow"] = _networks(app.config["KERNEL_METRICS_ALLOW"])
    app.extensions["kernel.request_log"].observers.append(observe)
    app.register_blueprint(bp)
