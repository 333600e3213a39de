"""A worker's graceful stop: streams in flight finish, and those that cannot end properly.

gunicorn stops a worker (SIGTERM: a stop, a reload with SIGHUP, a worker restart) by closing its listener
and waiting up to ``graceful_timeout`` for requests in flight, then killing them: a client would see its
stream cut with no ending. Here, on that SIGTERM the worker starts a clock; a stream still running a few
seconds before gunicorn's timeout ends itself with an error event and ``data: [DONE]`` (the pipeline
checks the clock while it waits, see :class:`kernel.chat.Generation`).

gunicorn.conf.py tells the app its ``graceful_timeout`` through ``KERNEL_GRACEFUL_TIMEOUT_S``; elsewhere
(tests, the Flask CLI) nothing is installed.
"""

import logging
import os
import signal
import time

log = logging.getLogger(__name__)

# Seconds before gunicorn's own deadline at which streams end themselves: the pipeline looks once a second.
MARGIN_S = 3.0


class Shutdown:
    """When this worker must have ended its streams; ``None`` while it is not stopping."""

    def __init__(self):
        self.deadline = None

    def begin(self, graceful_timeout_s):
        if self.deadline is None:
            self.deadline = time.monotonic() + max(graceful_timeout_s - MARGIN_S, 0.0)
            log.info("stopping: streams in flight have %.0f s to finish", graceful_timeout_s - MARGIN_S)

    def expired(self):
        return self.deadline is not None and time.monotonic() >= self.deadline


def _install(state, graceful_timeout_s):
    previous = signal.getsignal(signal.SIGTERM)
    if not callable(previous):  # not in a gunicorn worker
        return

    def on_sigterm(signum, frame):
        state.begin(graceful_timeout_s)
        previous(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)


def init_app(app):
    state = app.extensions["kernel.shutdown"] = Shutdown()
    graceful = os.environ.get("KERNEL_GRACEFUL_TIMEOUT_S")
    if graceful:
        _install(state, float(graceful))
