"""The registry: register instances, see them online, chat with them at ``/api/chat/<instance_id>``.

Any Kernel Chat server is a registry. A ``direct`` instance is an OpenAI-compatible endpoint the
registry calls; a ``tunnel`` instance is a machine (usually behind NAT) whose connector holds a
WebSocket open to the registry (``flask --app app connect``). See docs/registry.md.

Layers: the blueprints (:mod:`.api`, :mod:`.chat`) use the chat pipeline and the backends
(:mod:`.backends`, :mod:`.tunnel`) and the store (:mod:`.store`); nothing points back up.
"""

import logging
import os
import signal
import uuid

import gevent

from kernel.backends.base import BackendUnavailable
from kernel.config import ConfigError
from kernel.store import connect

from . import api, chat, status, ws
from . import store as instances
from .backends import DirectBackend, DirectPool, TunnelBackend
from .protocol import FATAL
from .tunnel import TunnelHub

log = logging.getLogger("kernel.registry")

TUNNELS_NEED_ONE_WORKER = (
    "Tunnels need a single gunicorn worker: a WebSocket lives in one process, and a chat that reached "
    "another worker would fail. Run with KERNEL_WORKERS=1, or set KERNEL_TUNNELS=off to serve direct "
    "instances only with several workers."
)


class InstanceUnavailable(BackendUnavailable):
    """503 with ``Retry-After``: the instance is offline, or this registry cannot reach it."""

    code = "instance_unavailable"


class Registry:
    """Per-app state: the open tunnels of this worker and the pooled backends of direct instances."""

    def __init__(self, app):
        self.config = app.config
        self.db_path = app.extensions["kernel.db_path"]
        self.hub = TunnelHub()
        self.direct = DirectPool(app.config)
        self.holder = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.started = False
        workers = app.config["KERNEL_WORKERS"]
        setting = app.config["KERNEL_TUNNELS"]
        if setting == "on" and workers > 1:
            log.critical("KERNEL_TUNNELS=on with KERNEL_WORKERS=%s: %s", workers, TUNNELS_NEED_ONE_WORKER)
            raise ConfigError(f"KERNEL_TUNNELS=on with KERNEL_WORKERS={workers}: {TUNNELS_NEED_ONE_WORKER}")
        self.tunnels = setting == "on" or (setting == "auto" and workers == 1)
        if self.tunnels:
            self.tunnels_off = None
        elif setting == "off":
            self.tunnels_off = "Tunnels are turned off on this registry (KERNEL_TUNNELS=off)."
        else:
            self.tunnels_off = (f"Tunnels are off on this registry: it runs {workers} workers "
                                "(KERNEL_WORKERS), and a tunnel needs exactly one.")

    @property
    def retry_after(self):
        return max(1, round(self.config["KERNEL_PROBE_INTERVAL_S"]))

    def unavailable(self, message):
        return InstanceUnavailable(message, retry_after=self.retry_after)

    def backend_for(self, row):
        """The backend that serves a chat with the instance ``row``; 503 if it is offline."""
        if row["mode"] == "direct":
            if row["status"] != "online":
                raise self.unavailable(f"Instance {row['instance_id']} is offline: its endpoint did not "
                                       "answer the last probe")
            return DirectBackend(self.config, self.direct.get(row), self.retry_after)
        if not self.tunnels:
            raise self.unavailable(self.tunnels_off)
        connection = self.hub.get(row["instance_id"])
        if connection is None:
            raise self.unavailable(f"Instance {row['instance_id']} is offline: its connector is not connected")
        return TunnelBackend(self.config, connection, row["model"], self.retry_after)

    def forget(self, instance_id, reason):
        """An instance was deleted or its secret changed: drop its backend, close its tunnel for good."""
        self.direct.forget(instance_id)
        self.hub.close(instance_id, FATAL, reason)

    # -- background work (only in a gevent server: never in the CLI or the test client) ---------------

    def start(self):
        if self.started:
            return
        self.started = True
        if self.tunnels:
            conn = connect(self.db_path)
            try:
                instances.reset_tunnels(conn)  # no socket survives a restart
            finally:
                conn.close()
            _close_tunnels_on_sigterm(self.hub)
        gevent.spawn(status.probe_loop, self)

    def probe_soon(self, instance_id):
        if self.started:
            gevent.spawn(status.probe_one, self, instance_id)


def _close_tunnels_on_sigterm(hub):
    """On gunicorn's graceful stop, close tunnels at once (1001) so connectors reconnect elsewhere.

    Otherwise each open tunnel would hold the worker for the whole graceful timeout. gunicorn's own
    handler still runs first.
    """
    previous = signal.getsignal(signal.SIGTERM)
    if not callable(previous):
        return

    def on_sigterm(signum, frame):
        previous(signum, frame)
        gevent.spawn(hub.close_all, ws.GOING_AWAY, "the registry is restarting")

    signal.signal(signal.SIGTERM, on_sigterm)


def _in_gevent_server():
    try:
        from gevent import monkey
    except ImportError:  # pragma: no cover
        return False
    return monkey.is_module_patched("socket")


def init_app(app):
    registry = Registry(app)
    app.extensions["kernel.registry"] = registry
    api.init_app(app)
    chat.init_app(app)
    from . import connector  # here, so that `python -m kernel.registry.connector` imports it only once

    connector.init_app(app)
    if _in_gevent_server():
        registry.start()
