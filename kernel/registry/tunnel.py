"""The registry's side of the tunnel: one WebSocket per instance, many chats multiplexed over it.

A :class:`TunnelConnection` lives in the greenlet of the ``GET /api/instances/<id>/connect`` request
that opened it, reading the instance's messages and handing each to the :class:`Stream` of its chat.
Chats (:class:`kernel.registry.backends.TunnelBackend`) write ``start`` and ``cancel``. Nothing an
instance sends reaches a client as it was sent: only text, a finish reason, token counts and an
error's status and message are taken from it, and the chat pipeline encodes them afresh.
"""

import itertools
import logging
import uuid

import gevent
from gevent.queue import Queue

from kernel.backends.base import BackendError, BackendUnavailable

from . import protocol, ws

log = logging.getLogger("kernel.registry")


class InstanceError(BackendError):
    """The instance answered a chat with an error; its status (4xx/5xx) is passed on."""

    code = "instance_error"

    def __init__(self, status, message, retry_after=None):
        super().__init__(message, retry_after=retry_after)
        self.status = status


class Done:
    __slots__ = ("finish_reason", "prompt_tokens", "completion_tokens")

    def __init__(self, finish_reason, prompt_tokens, completion_tokens):
        self.finish_reason = finish_reason
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens


class Stream:
    """One chat's items, from the connection's reader to the chat's generator: text, then Done or an error."""

    def __init__(self, stream_id, max_buffered):
        self.id = stream_id
        self.ended = False
        self.buffered = 0
        self.max_buffered = max_buffered
        self._queue = Queue()

    def text(self, text):
        """Queue a delta; False (and the stream failed) if the chat is too far behind to take more."""
        self.buffered += len(text)
        if self.buffered > self.max_buffered:
            self.fail(BackendUnavailable("the client reads this answer too slowly; it was cut short"))
            return False
        self._queue.put(text)
        return True

    def finish(self, item):
        if not self.ended:
            self.ended = True
            self._queue.put(item)

    def fail(self, exc):
        self.finish(exc)

    def get(self, timeout):
        """The next item; raises ``gevent.queue.Empty`` after ``timeout`` s of nothing."""
        item = self._queue.get(timeout=timeout)
        if isinstance(item, str):
            self.buffered -= len(item)
        return item


def request_body(chat_request):
    """The kernel2 chat request an instance is asked to answer."""
    body = {
        "messages": chat_request.messages,
        "temperature": chat_request.temperature,
        "max_tokens": chat_request.max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if chat_request.model:
        body["model"] = chat_request.model
    if chat_request.stop:
        body["stop"] = chat_request.stop
    for name in ("top_p", "presence_penalty", "frequency_penalty", "seed", "user", "metadata"):
        value = getattr(chat_request, name)
        if value is not None:
            body[name] = value
    return body


class TunnelConnection:
    def __init__(self, instance_id, websocket, settings):
        self.instance_id = instance_id
        self.connection_id = uuid.uuid4().hex
        self.ws = websocket
        self.version = protocol.VERSION
        self.streams = {}
        self._ids = itertools.count(1)
        self.ping_s = settings["KERNEL_TUNNEL_PING_S"]
        self.timeout_s = settings["KERNEL_TUNNEL_TIMEOUT_S"]
        self.max_streams = settings["KERNEL_TUNNEL_MAX_STREAMS"]
        self.max_buffered = 8 * settings["KERNEL_TUNNEL_MAX_MESSAGE_BYTES"]

    @property
    def open(self):
        return self.ws.closed is None

    # -- handshake -----------------------------------------------------------------------------------

    def handshake(self):
        """Wait for ``hello``, settle the version and answer ``welcome``. Raises ``ws.Closed`` on failure."""
        with gevent.Timeout(self.timeout_s, False):
            hello = self._hello()
            offered = hello.get("version")
            if not isinstance(offered, int) or offered < protocol.MIN_VERSION:
                self.ws.close(protocol.UNSUPPORTED_VERSION,
                              f"this registry speaks tunnel versions {protocol.MIN_VERSION}-{protocol.VERSION}")
                raise ws.Closed(protocol.UNSUPPORTED_VERSION, "unsupported version")
            self.version = min(offered, protocol.VERSION)
            self.ws.send_text(protocol.dumps({
                "type": "welcome",
                "version": self.version,
                "instance_id": self.instance_id,
                "ping_interval_s": self.ping_s,
                "timeout_s": self.timeout_s,
                "max_message_bytes": self.ws.max_message_bytes,
            }))
            return
        self.ws.close(protocol.SILENT, "no hello")
        raise ws.Closed(protocol.SILENT, "no hello in time")

    def _hello(self):
        try:
            message = protocol.loads(self.ws.receive())
            if message["type"] != "hello":
                raise protocol.BadMessage("the first message must be 'hello'")
        except protocol.BadMessage as exc:
            self.ws.close(protocol.BAD_MESSAGE, str(exc))
            raise ws.Closed(protocol.BAD_MESSAGE, str(exc)) from None
        return message

    # -- chats ---------------------------------------------------------------------------------------

    def start(self, chat_request, retry_after):
        if len(self.streams) >= self.max_streams:
            raise BackendUnavailable(
                f"the instance has {len(self.streams)} chats in flight, the most this registry allows",
                retry_after=1,
            )
        stream = Stream(f"r{next(self._ids)}", self.max_buffered)
        self.streams[stream.id] = stream
        message = {"type": "start", "id": stream.id, "request": request_body(chat_request)}
        try:
            self.ws.send_text(protocol.dumps(message))
        except ws.Closed:
            self.streams.pop(stream.id, None)
            raise BackendUnavailable("the instance is offline", retry_after=retry_after) from None
        return stream

    def finish(self, stream):
        """A chat is over (or abandoned): forget it, and tell the instance to stop if it has not ended."""
        self.streams.pop(stream.id, None)
        if not stream.ended:
            stream.ended = True
            self._cancel(stream.id)

    def _cancel(self, stream_id):
        if self.open:
            try:
                self.ws.send_text(protocol.dumps({"type": "cancel", "id": stream_id}))
            except ws.Closed:
                pass

    # -- reading -------------------------------------------------------------------------------------

    def serve(self):
        """Read the instance's messages until the connection ends; returns why it ended."""
        keepalive = gevent.spawn(self._keepalive)
        try:
            while True:
                self._dispatch(protocol.loads(self.ws.receive()))
        except ws.Closed as exc:
            return f"{exc.code} {exc.reason}".strip()
        except protocol.BadMessage as exc:
            self.ws.close(protocol.BAD_MESSAGE, str(exc))
            return f"cut off: {exc}"
        finally:
            keepalive.kill(block=False)
            for stream in list(self.streams.values()):
                stream.fail(BackendUnavailable("the instance disconnected", retry_after=1))
            self.streams.clear()
            self.ws.release()

    def _dispatch(self, message):
        kind = message["type"]
        if kind not in ("chunk", "done", "error"):
            return  # unknown types are for later versions
        stream = self.streams.get(protocol.request_id(message))
        if stream is None or stream.ended:
            return  # cancelled, or already over: late messages are dropped
        if kind == "chunk":
            text = message.get("text")
            if not isinstance(text, str):
                raise protocol.BadMessage("a 'chunk' message has no 'text' string")
            if text and not stream.text(text):  # the chat fell too far behind: stop the instance
                self.streams.pop(stream.id, None)
                self._cancel(stream.id)
        elif kind == "done":
            finish_reason = message.get("finish_reason")
            if finish_reason not in protocol.FINISH_REASONS:
                finish_reason = "stop"
            usage = message.get("usage") if isinstance(message.get("usage"), dict) else {}
            stream.finish(Done(finish_reason, protocol.count(usage.get("prompt_tokens")),
                               protocol.count(usage.get("completion_tokens"))))
        else:
            status = protocol.error_status(message.get("status"))
            retry_after = 1 if status in (429, 503) else None
            stream.fail(InstanceError(status, protocol.error_text(message.get("message")), retry_after))

    def _keepalive(self):
        """Ping every ``ping_s``; close the connection after ``timeout_s`` without a byte from the instance."""
        if ws.keep_alive(self.ws, self.ping_s, self.timeout_s, gevent.sleep, lambda: self.open, protocol.SILENT):
            log.warning("instance %s: nothing received for %g s; closed its tunnel", self.instance_id, self.timeout_s)


class TunnelHub:
    """The open tunnels of this worker process, by instance id. A new connection replaces an old one."""

    def __init__(self):
        self.connections = {}
        self.closing = False  # the worker is stopping: no new tunnels

    def get(self, instance_id):
        connection = self.connections.get(instance_id)
        return connection if connection is not None and connection.open else None

    def attach(self, connection):
        old = self.connections.get(connection.instance_id)
        self.connections[connection.instance_id] = connection
        if old is not None and old is not connection:
            old.ws.close(protocol.REPLACED, "replaced by a new connection")

    def detach(self, connection):
        if self.connections.get(connection.instance_id) is connection:
            del self.connections[connection.instance_id]
            return True
        return False

    def close(self, instance_id, code, reason):
        connection = self.connections.get(instance_id)
        if connection is not None:
            connection.ws.close(code, reason)

    def close_all(self, code, reason):
        self.closing = True
        for connection in list(self.connections.values()):
            connection.ws.close(code, reason)
