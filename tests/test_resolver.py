import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from kernel.resolver import Resolver


class Pool:
    """Stands in for gevent's thread pool: records what would have been sent to a thread."""

    def __init__(self):
        self.calls = []

    def apply(self, func, args=(), kwargs=None):
        self.calls.append(args)
        return func(*args, **(kwargs or {}))


class Hub:
    NOT_ERROR = ()

    def __init__(self):
        self.threadpool = Pool()


@pytest.mark.parametrize(
    "host, family, on_thread",
    [
        ("127.0.0.1", socket.AF_INET, False),
        ("::1", socket.AF_INET6, False),
        ("fe80::1%lo", socket.AF_INET6, False),
        ("localhost", None, True),  # a name: looked up on a thread, as gevent does
        ("127.0.0.1.", None, True),
    ],
)
def test_addresses_are_answered_in_place_and_names_looked_up_on_a_thread(host, family, on_thread):
    hub = Hub()
    try:
        answer = Resolver(hub).getaddrinfo(host, 80, 0, socket.SOCK_STREAM)
    except socket.gaierror:
        answer = None
    assert bool(hub.threadpool.calls) == on_thread
    if family is not None:
        assert answer and all(info[0] == family for info in answer)
        assert answer == socket.getaddrinfo(host, 80, 0, socket.SOCK_STREAM)


def worker_pids(master_pid):
    return [int(pid) for pid in Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()]


def test_a_worker_opens_upstream_connections_without_resolver_threads(start_server, upstream):
    """gevent's own resolver would start a pool thread to look up 127.0.0.1 for the first new connection."""
    server = start_server(KERNEL_BACKEND="openai", KERNEL_UPSTREAM_URL=upstream.url)
    body = {"messages": [{"role": "user", "content": "several at once"}], "model": "slow:3:0.05", "stream": True}
    (worker,) = worker_pids(server.process.pid)
    threads = len(list(Path(f"/proc/{worker}/task").iterdir()))
    with ThreadPoolExecutor(8) as pool:  # eight streams at once: eight new upstream connections
        answers = list(pool.map(lambda _: server.post("/api/kernel2/chat", body), range(8)))
    assert [a.status_code for a in answers] == [200] * 8
    assert len(list(Path(f"/proc/{worker}/task").iterdir())) == threads
