"""The Prometheus instruments, and how a finished request is counted. No Flask here: backends use them too.

The instruments are module-level, as loggers are: one set per process, whatever the number of apps. Under
gunicorn, ``PROMETHEUS_MULTIPROC_DIR`` (set by gunicorn.conf.py) makes every worker write its figures to
files that a scrape adds up.
"""

import os

from prometheus_client import Counter, Gauge, Histogram

MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
FIRST_CHUNK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

REQUESTS = Counter("kernel_requests_total", "Requests answered, by route and status", ["route", "method", "status"])
LATENCY = Histogram("kernel_request_duration_seconds", "Time from request to the end of its response (streams: "
                    "to their last byte), by route", ["route"], buckets=LATENCY_BUCKETS)
FIRST_CHUNK = Histogram("kernel_time_to_first_chunk_seconds", "Time from request to the first bytes of a chat "
                        "answer", ["route"], buckets=FIRST_CHUNK_BUCKETS)
TOKENS = Counter("kernel_completion_tokens_total", "Tokens generated for clients, by backend", ["backend"])
BACKEND_ERRORS = Counter("kernel_backend_errors_total", "Chats that failed in the backend, by error code",
                         ["code"])
STREAMS = Gauge("kernel_chats_in_flight", "Chats being answered now", multiprocess_mode="livesum")
LOCAL_QUEUE = Gauge("kernel_local_model_waiting", "Requests waiting for the local model",
                    multiprocess_mode="livesum")
TUNNEL_CHATS = Gauge("kernel_tunnel_chats_in_flight", "Registry chats in flight through tunnels",
                     multiprocess_mode="livesum")


def observe(fields, stream):
    """Count one finished request; ``fields`` as the request log has them, ``stream`` its generation or None."""
    route = fields["route"]
    REQUESTS.labels(route, fields["method"], str(fields["status"])).inc()
    LATENCY.labels(route).observe(fields["ms"] / 1000)
    if stream is None:
        return
    if fields["ttfc_ms"] is not None:
        FIRST_CHUNK.labels(route).observe(fields["ttfc_ms"] / 1000)
    if stream.result.completion_tokens:
        TOKENS.labels(fields["backend"] or "unknown").inc(stream.result.completion_tokens)
    if stream.end == "backend_error":
        BACKEND_ERRORS.labels(stream.error_code or "unknown").inc()


