"""gunicorn settings for Kernel Chat. Read by ``gunicorn -c gunicorn.conf.py app:app``.

Only the standard library is imported here: the gevent worker must monkey-patch before Flask,
requests or the app are imported (so no ``preload_app`` either).
"""

import os

# Server socket
bind = os.environ.get("KERNEL_BIND", "127.0.0.1:8002")
backlog = 2048

# Worker processes: one gevent worker serves many concurrent streams.
workers = int(os.environ.get("KERNEL_WORKERS", "1"))
worker_class = "gevent"
worker_connections = int(os.environ.get("KERNEL_WORKER_CONNECTIONS", "1000"))
# Streams are long-lived, but the gevent worker keeps heart-beating while the hub is free.
timeout = 30
graceful_timeout = 30
keepalive = 5

# gunicornc's control socket lives with the instance's data, so several instances never share one.
control_socket = os.path.join(os.environ.get("KERNEL_DATA_DIR") or "./data", "gunicorn.ctl")

# Logging
accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("KERNEL_LOG_LEVEL", "info")
proc_name = "kernel-chat"
