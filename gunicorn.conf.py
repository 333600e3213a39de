"""gunicorn settings for Kernel Chat. Read by ``gunicorn -c gunicorn.conf.py app:app``.

Only the standard library is imported here: the gevent worker must monkey-patch before Flask,
requests or the app are imported (so no ``preload_app`` either).
"""

import os
import resource

# Server socket
bind = os.environ.get("KERNEL_BIND", "127.0.0.1:8002")
backlog = 2048

# Worker processes: one gevent worker serves many concurrent streams.
workers = int(os.environ.get("KERNEL_WORKERS", "1"))
worker_class = "gevent"
worker_connections = int(os.environ.get("KERNEL_WORKER_CONNECTIONS", "1000"))
# gevent's resolver, except that an IP address is not sent to a thread to be looked up (kernel/resolver.py).
os.environ.setdefault("GEVENT_RESOLVER", "kernel.resolver.Resolver")
# Streams are long-lived, but the gevent worker keeps heart-beating while the hub is free.
timeout = 30
# On a stop or reload, streams in flight get this long to finish; those still running a few seconds before it
# end with an error event and [DONE] (kernel/shutdown.py), never a cut connection.
graceful_timeout = int(float(os.environ.get("KERNEL_GRACEFUL_TIMEOUT_S", "30")))
os.environ["KERNEL_GRACEFUL_TIMEOUT_S"] = str(graceful_timeout)
keepalive = 5

# Metrics: every worker writes its figures to files here, which /metrics adds up (prometheus_client).
_metrics_dir = os.environ.setdefault(
    "PROMETHEUS_MULTIPROC_DIR", os.path.join(os.environ.get("KERNEL_DATA_DIR") or "./data", "metrics")
)

# gunicornc's control socket lives with the instance's data, so several instances never share one.
control_socket = os.path.join(os.environ.get("KERNEL_DATA_DIR") or "./data", "gunicorn.ctl")

# Each relayed stream holds two descriptors (client and upstream) and the upstream pool keeps more, so a
# worker needs about 2 x worker_connections open files. Raise the soft limit to the hard one at start.
_soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
_want = 1 << 20 if _hard == resource.RLIM_INFINITY else _hard
if _soft != resource.RLIM_INFINITY and _soft < _want:
    resource.setrlimit(resource.RLIMIT_NOFILE, (_want, _hard))


def on_starting(server):
    os.makedirs(_metrics_dir, exist_ok=True)
    for name in os.listdir(_metrics_dir):  # figures of an earlier run
        if name.endswith(".db"):
            os.remove(os.path.join(_metrics_dir, name))
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    server.log.info("%d worker(s), %d connections each, open-file limit %d", workers, worker_connections, limit)
    if limit < 2 * worker_connections + 64:
        server.log.warning(
            "open-file limit %d is below 2 x KERNEL_WORKER_CONNECTIONS + 64 = %d: past about %d streams a "
            "worker will fail to accept; raise it (systemd: LimitNOFILE=) or lower KERNEL_WORKER_CONNECTIONS",
            limit, 2 * worker_connections + 64, (limit - 64) // 2,
        )


# Logging
# The app writes one line per request itself (kernel/requestlog.py), with stream timings gunicorn cannot see.
accesslog = None
errorlog = "-"
loglevel = os.environ.get("KERNEL_LOG_LEVEL", "info")
proc_name = "kernel-chat"


def child_exit(server, worker):
    # A dead worker's live gauges (chats in flight, queue depth) no longer count.
    for mode in ("liveall", "livesum", "livemax", "livemin", "livemostrecent"):
        path = os.path.join(_metrics_dir, f"gauge_{mode}_{worker.pid}.db")
        if os.path.exists(path):
            os.remove(path)
