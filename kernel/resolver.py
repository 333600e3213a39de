"""gevent's default resolver, less the round trip to a thread for a name that is already an address.

gevent resolves names on its thread pool, so a slow DNS server never blocks the event loop. That costs
about 50 µs of CPU and a handoff per call, and in a burst every new upstream connection queues for one
of the pool's few threads, even when the upstream is ``127.0.0.1`` and there is nothing to look up.
An IP address is answered in place by the system's ``getaddrinfo`` with ``AI_NUMERICHOST``, which
never consults DNS; anything else goes to the thread pool as before.

``gunicorn.conf.py`` selects it for the workers through gevent's ``GEVENT_RESOLVER`` setting.
"""

import socket

from gevent.resolver.thread import Resolver as ThreadResolver

try:
    from gevent.monkey import get_original

    _getaddrinfo = get_original("socket", "getaddrinfo")
except ImportError:  # pragma: no cover - gevent is a dependency
    _getaddrinfo = socket.getaddrinfo


class Resolver(ThreadResolver):
    def getaddrinfo(self, host, port, family=0, type=0, proto=0, flags=0):
        if isinstance(host, str) and _is_address(host):
            return _getaddrinfo(host, port, family, type, proto, flags | socket.AI_NUMERICHOST)
        return super().getaddrinfo(host, port, family, type, proto, flags)


def _is_address(host):
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host.split("%", 1)[0])  # an IPv6 address may name its interface
            return True
        except (OSError, ValueError):
            continue
    return False
