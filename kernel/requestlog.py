"""One log line per request, written when its response has been sent (for a stream: when it ends).

Readable by default::

    POST /api/kernel2/chat 200 412.3ms ttfc=35.1ms bytes=2310 end=done backend=openai client=127.0.0.1 id=req_…

or one JSON object per line with ``KERNEL_LOG_FORMAT=json``. It carries the method, the route (its rule,
not the path, so ids and secrets in paths stay out), status, duration, time to the first body bytes,
bytes sent, why a stream ended, the backend or instance, the client's address and the request id; never
a body, a message or a key. It replaces gunicorn's access log.
"""

import json
import logging
import sys
import time

log = logging.getLogger("kernel.access")

# Set on the WSGI environ by the app while it handles the request.
ROUTE = "kernel.route"
BACKEND = "kernel.backend"
STREAM = "kernel.stream"  # a chat's generation: ``streaming``, and ``end``: why it ended
REQUEST_ID = "kernel.request_id"


class RequestLog:
    """WSGI middleware: times the response, counts its bytes, logs one line when it is closed."""

    def __init__(self, app, fmt="text"):
        self.app = app
        self.json = fmt == "json"
        self.observers = []  # called with each request's fields and its stream (metrics)

    def __call__(self, environ, start_response):
        started = time.perf_counter()
        status = []

        def record_status(code, headers, exc_info=None):
            status[:] = [code]
            return start_response(code, headers, exc_info)

        body = self.app(environ, record_status)
        return _Logged(self, body, environ, status, started)

    def emit(self, environ, status, started, first, sent, finished):
        stream = environ.get(STREAM)
        fields = {
            "method": environ.get("REQUEST_METHOD"),
            "route": environ.get(ROUTE) or "(no route)",
            "status": int(status[0].split(" ", 1)[0]) if status else 500,
            "ms": round((finished - started) * 1000, 1),
            "ttfc_ms": round((first - started) * 1000, 1) if first is not None and getattr(stream, "streaming", False)
            else None,
            "bytes": sent,
            "end": getattr(stream, "end", None),
            "backend": environ.get(BACKEND),
            "client": environ.get("REMOTE_ADDR"),
            "id": environ.get(REQUEST_ID),
        }
        for observer in self.observers:
            observer(fields, stream)
        if not log.isEnabledFor(logging.INFO):
            return
        if self.json:
            log.info(json.dumps(fields, separators=(",", ":")))
            return
        line = f"{fields['method']} {fields['route']} {fields['status']} {fields['ms']}ms"
        if fields["ttfc_ms"] is not None:
            line += f" ttfc={fields['ttfc_ms']}ms"
        line += f" bytes={sent}"
        for name in ("end", "backend", "client", "id"):
            if fields[name] is not None:
                line += f" {name}={fields[name]}"
        log.info(line)


class _Logged:
    """The response body, passed through; its ``close()`` writes the line."""

    __slots__ = ("log", "body", "environ", "status", "started", "first", "sent")

    def __init__(self, request_log, body, environ, status, started):
        self.log, self.body, self.environ, self.status, self.started = request_log, body, environ, status, started
        self.first = None
        self.sent = 0

    def __iter__(self):
        for chunk in self.body:
            if chunk and self.first is None:
                self.first = time.perf_counter()
            self.sent += len(chunk)
            yield chunk

    def close(self):
        try:
            close = getattr(self.body, "close", None)
            if close is not None:
                close()
        finally:
            self.log.emit(self.environ, self.status, self.started, self.first, self.sent, time.perf_counter())


def init_app(app):
    """Wrap the app; JSON lines go to stderr as they are, text lines through the app's log handlers."""
    fmt = app.config["KERNEL_LOG_FORMAT"]
    if fmt == "json":
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.handlers = [handler]
        log.propagate = False
        log.setLevel(logging.INFO)
    app.wsgi_app = app.extensions["kernel.request_log"] = RequestLog(app.wsgi_app, fmt)
