"""WebSocket connections on plain sockets, with wsproto doing the framing (RFC 6455).

Used by both ends of the tunnel: the registry (a greenlet per connection under gunicorn's gevent
worker, on the socket gunicorn hands the request) and the connector (plain threads). Why not
simple-websocket, which flask-sock is built on, is in docs/registry.md; in short, what a tunnel needs
and it does not give: every write is ``sendall`` under one lock (many chats write to one socket at
once), no background reader with an unbounded buffer, a cap on message size counted as the bytes
arrive, no compression (a small deflated frame could inflate without limit), and a send timeout so a
peer that stops reading cannot block the writers.
"""

import socket
import ssl
import threading
import time
from collections import deque
from urllib.parse import urlsplit

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

READ_SIZE = 64 * 1024
HANDSHAKE_LIMIT = 64 * 1024

NORMAL = 1000
GOING_AWAY = 1001
PROTOCOL_ERROR = 1002
UNSUPPORTED_DATA = 1003
ABNORMAL = 1006
POLICY_VIOLATION = 1008
MESSAGE_TOO_BIG = 1009


class Closed(Exception):
    """The connection is closed (by either side, or lost); ``code`` and ``reason`` say why."""

    def __init__(self, code, reason=""):
        super().__init__(f"{code} {reason}".strip())
        self.code = code
        self.reason = reason


class HandshakeRejected(Exception):
    """The server answered the upgrade with an HTTP error instead of 101."""

    def __init__(self, status, body):
        super().__init__(f"HTTP {status}")
        self.status = status
        self.body = body


class WebSocket:
    """One open connection. ``receive()`` from one reader; ``send_text()`` from any number of writers."""

    def __init__(self, sock, connection, max_message_bytes):
        self.sock = sock
        self.ws = connection
        self.max_message_bytes = max_message_bytes
        self.closed = None  # (code, reason) once closed
        self.last_received = time.monotonic()
        self._lock = threading.Lock()  # gevent's lock where the worker has patched threading
        self._ready = deque()
        self._parts = []
        self._size = 0

    # -- writing -------------------------------------------------------------------------------------

    def send_text(self, text):
        self._send(TextMessage(data=text))

    def ping(self):
        self._send(Ping(payload=b"k"))

    def _send(self, event):
        with self._lock:
            if self.closed is not None:
                raise Closed(*self.closed)
            try:
                self.sock.sendall(self.ws.send(event))
            except (OSError, LocalProtocolError) as exc:
                self._lost(f"send failed: {exc}")
                raise Closed(*self.closed) from None

    def close(self, code=NORMAL, reason=""):
        """Send a close frame (best effort) and shut the socket; the reader sees :class:`Closed`."""
        with self._lock:
            if self.closed is not None:
                return
            self.closed = (code, reason)
            try:
                self.sock.sendall(self.ws.send(CloseConnection(code=code, reason=reason[:120])))
            except (OSError, LocalProtocolError):
                pass
            self._shutdown()

    def _lost(self, reason):
        if self.closed is None:
            self.closed = (ABNORMAL, reason)
        self._shutdown()

    def _shutdown(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def release(self):
        """Close the socket itself; call once, from the reader, when done."""
        try:
            self.sock.close()
        except OSError:
            pass

    # -- reading -------------------------------------------------------------------------------------

    def receive(self, timeout=None):
        """The next text message, as ``str``. Raises :class:`Closed` when the connection ends.

        A binary message, a broken frame or a message over ``max_message_bytes`` closes the connection
        (1003, 1002, 1009): the sender is cut off as soon as the excess arrives, never buffered. With
        ``timeout``, a connection silent that long is closed; without, liveness is the keep-alive's business.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._ready:
            if self.closed is not None:
                raise Closed(*self.closed)
            try:
                data = self.sock.recv(READ_SIZE)
            except socket.timeout:
                if deadline is not None and time.monotonic() > deadline:
                    self.close(POLICY_VIOLATION, "timed out waiting for a message")
                continue
            except OSError as exc:
                self._lost(f"connection lost: {exc}")
                continue
            if not data:
                self._lost("connection lost")
                continue
            self.last_received = time.monotonic()
            try:
                self.ws.receive_data(data)
            except RemoteProtocolError as exc:
                self.close(PROTOCOL_ERROR, str(exc))
                continue
            self._handle_events()
        return self._ready.popleft()

    def _handle_events(self):
        for event in self.ws.events():
            if isinstance(event, TextMessage):
                self._size += len(event.data.encode("utf-8", "surrogatepass"))
                if self._size > self.max_message_bytes:
                    self.close(MESSAGE_TOO_BIG, f"message over {self.max_message_bytes} bytes")
                    return
                self._parts.append(event.data)
                if event.message_finished:
                    self._ready.append("".join(self._parts))
                    self._parts = []
                    self._size = 0
            elif isinstance(event, BytesMessage):
                self.close(UNSUPPORTED_DATA, "binary messages are not part of the protocol")
                return
            elif isinstance(event, Ping):
                try:
                    self._send(event.response())
                except Closed:
                    return
            elif isinstance(event, Pong):
                pass
            elif isinstance(event, CloseConnection):
                with self._lock:
                    if self.closed is None:
                        self.closed = (event.code, event.reason or "")
                        try:
                            self.sock.sendall(self.ws.send(event.response()))
                        except (OSError, LocalProtocolError):
                            pass
                    self._shutdown()
                return


# -- handshakes ---------------------------------------------------------------------------------------

def keep_alive(websocket, ping_s, timeout_s, sleep, still_open, silent_code):
    """Ping every ``ping_s``; close ``websocket`` (``silent_code``) after ``timeout_s`` without a byte from
    the other end. Returns ``True`` if it closed it for that silence.

    ``sleep`` is the caller's (gevent's, or a thread's); ``still_open()`` says whether to go on.
    """
    tick = min(ping_s, timeout_s / 4)
    last_ping = time.monotonic()
    while still_open():
        sleep(tick)
        now = time.monotonic()
        if now - websocket.last_received > timeout_s:
            websocket.close(silent_code, f"nothing received for {timeout_s:g} s")
            return True
        if now - last_ping >= ping_s:
            last_ping = now
            try:
                websocket.ping()
            except Closed:
                return False
    return False


def upgrade_request(environ):
    """The HTTP request of a WSGI ``environ`` as wsproto's server side sees it; raises ``ValueError``."""
    head = [f"GET {environ.get('RAW_URI') or environ.get('PATH_INFO') or '/'} HTTP/1.1"]
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            head.append(f"{key[5:].replace('_', '-').title()}: {value}")
    connection = WSConnection(ConnectionType.SERVER)
    try:
        connection.receive_data(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        event = next(connection.events(), None)
    except (RemoteProtocolError, UnicodeEncodeError) as exc:
        raise ValueError(str(exc)) from None
    if not isinstance(event, Request):
        raise ValueError("not a WebSocket upgrade request")
    return connection


def accept(sock, connection, max_message_bytes):
    """Answer an upgrade parsed by :func:`upgrade_request` with 101 on ``sock``; the open :class:`WebSocket`."""
    sock.sendall(connection.send(AcceptConnection()))  # no extensions: no permessage-deflate
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass
    return WebSocket(sock, connection, max_message_bytes)


def connect(url, headers, max_message_bytes, timeout):
    """Open a client connection to ``url`` (``ws``, ``wss``, ``http`` or ``https``).

    Raises :class:`HandshakeRejected` when the server answers with an HTTP error, ``OSError`` when it
    cannot be reached.
    """
    parts = urlsplit(url)
    secure = parts.scheme in ("wss", "https")
    port = parts.port or (443 if secure else 80)
    sock = socket.create_connection((parts.hostname, port), timeout=timeout)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if secure:
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=parts.hostname)
        connection = WSConnection(ConnectionType.CLIENT)
        host = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        sock.sendall(connection.send(Request(host=host, target=target, extra_headers=list(headers))))
        _await_accept(sock, connection)
    except BaseException:
        sock.close()
        raise
    return WebSocket(sock, connection, max_message_bytes)


def _await_accept(sock, connection):
    rejected, body, received = None, b"", 0
    while True:
        data = sock.recv(READ_SIZE)
        received += len(data)
        if not data or received > HANDSHAKE_LIMIT + READ_SIZE:
            if rejected is not None:
                raise HandshakeRejected(rejected, body)
            raise OSError("the server closed the connection during the WebSocket handshake")
        try:
            connection.receive_data(data)
        except RemoteProtocolError as exc:
            raise OSError(f"the server's answer is not a WebSocket handshake: {exc}") from None
        for event in connection.events():
            if isinstance(event, AcceptConnection):
                return
            if isinstance(event, RejectConnection):
                rejected = event.status_code
                if not event.has_body:
                    raise HandshakeRejected(rejected, b"")
            elif isinstance(event, RejectData):
                body = (body + event.data)[:HANDSHAKE_LIMIT]
                if event.body_finished:
                    raise HandshakeRejected(rejected, body)
