"""The relay under load and against upstreams that behave differently.

* An upstream that writes with Nagle's algorithm on (gevent's pywsgi, Werkzeug's development server):
  each of its writes must go out at once, not wait for a delayed ACK from us (a ~40 ms stall per request
  on reused connections). Asserted from the upstream's side: before each write it asks its kernel whether
  the previous one is still unacknowledged.
* A worker holding more than 1,024 sockets (select()'s limit) keeps serving every stream.
"""

import http.client
import json
import selectors
import socket
import time

import pytest

from tests.conftest import sse_events
from tests.upstream import Upstream

PACED = {"messages": [{"role": "user", "content": "hi"}], "model": "paced:5", "stream": True}


@pytest.fixture(scope="module")
def nagle_upstream():
    server = Upstream(nodelay=False).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def nagle_server(start_server, nagle_upstream):
    return start_server(KERNEL_BACKEND="openai", KERNEL_UPSTREAM_URL=nagle_upstream.url)


def test_a_client_that_delays_its_acks_holds_nagle_writes(nagle_upstream):
    """The control: a plain client reusing its connection makes the upstream's writes wait."""
    host, port = nagle_upstream.server.server_address[:2]
    before = nagle_upstream.stats.held
    conn = http.client.HTTPConnection(host, port, timeout=10)
    for _ in range(6):
        conn.request("POST", "/v1/chat/completions", body=json.dumps(PACED), headers={"Content-Type": "application/json"})
        conn.getresponse().read()
    conn.close()
    assert nagle_upstream.stats.held - before > 0


def test_relayed_writes_of_a_nagle_upstream_are_never_held(nagle_server, nagle_upstream):
    import requests

    session = requests.Session()
    writes, held = nagle_upstream.stats.paced_writes, nagle_upstream.stats.held
    for _ in range(10):  # over the worker's pooled, reused upstream connection
        response = session.post(nagle_server.url + "/api/kernel2/chat", json=PACED, stream=True, timeout=10)
        events = sse_events(response)
        assert "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1]) == "p0 p1 p2 p3 p4 "
    assert nagle_upstream.stats.paced_writes - writes == 50
    assert nagle_upstream.stats.held - held == 0


def read_streams(sockets, deadline):
    """Read every socket to its end; return the bytes of each."""
    received = {sock: [] for sock in sockets}
    selector = selectors.DefaultSelector()  # epoll: no limit on descriptor numbers
    for sock in sockets:
        selector.register(sock, selectors.EVENT_READ)
    open_count = len(sockets)
    while open_count and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=1):
            block = key.fileobj.recv(65536)
            if block:
                received[key.fileobj].append(block)
            else:
                selector.unregister(key.fileobj)
                open_count -= 1
    return [b"".join(received[sock]) for sock in sockets]


def concurrent_streams(server, model, count):
    """``count`` streams open at once on raw sockets; the full answers."""
    body = json.dumps({"messages": [{"role": "user", "content": "hi"}], "model": model, "stream": True})
    request = (f"POST /api/kernel2/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               f"Connection: close\r\nContent-Length: {len(body)}\r\n\r\n{body}").encode()
    sockets = []
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
            sock.sendall(request)
            sockets.append(sock)
        return read_streams(sockets, time.monotonic() + 60)
    finally:
        for sock in sockets:
            sock.close()


def test_a_worker_holding_over_1024_sockets_serves_every_stream(start_server, upstream):
    """A first wave leaves its upstream connections pooled in the worker, so the second wave's client
    sockets get descriptors above 1,024, and each stream's disconnect probe runs on them."""
    streams = 600
    server = start_server(KERNEL_BACKEND="openai", KERNEL_UPSTREAM_URL=upstream.url, KERNEL_WORKERS=1,
                          KERNEL_WORKER_CONNECTIONS=2000, KERNEL_SSE_PING_S=0.5)
    first_wave = concurrent_streams(server, "slow:1:0.5", streams)
    assert sum(a.startswith(b"HTTP/1.1 200 OK") for a in first_wave) == streams
    answers = concurrent_streams(server, "slow:3:1.0", streams)
    statuses = [answer.split(b"\r\n", 1)[0] for answer in answers]
    assert statuses.count(b"HTTP/1.1 200 OK") == streams, {s: statuses.count(s) for s in set(statuses)}
    complete = [a for a in answers if a.rstrip(b"\r\n0").endswith(b"data: [DONE]")]
    assert len(complete) == streams
    assert all(b"t0 " in a and b"t2 " in a for a in answers)
    assert "filedescriptor out of range" not in server.log(), server.log()[-3000:]
