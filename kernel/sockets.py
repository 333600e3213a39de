"""One socket check shared by the chat routes and the upstream connections: is there something to read now?

It uses the real ``poll(2)``, even where gevent has patched the ``select`` module: a check that never
waits needs no event loop (gevent's ``poll`` sets up watchers and a timer to answer it), and unlike
``select()`` it takes descriptors above ``FD_SETSIZE`` (1024), which a worker holding thousands of
sockets has.
"""

import select

try:
    from gevent.monkey import get_original

    _poll = get_original("select", "poll")
except ImportError:  # pragma: no cover - gevent is a dependency
    _poll = select.poll

READABLE = select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP


def readable_now(sock):
    """Whether ``sock`` has bytes, an end of stream or an error waiting; never blocks."""
    poller = _poll()
    poller.register(sock.fileno(), READABLE)
    return bool(poller.poll(0))
