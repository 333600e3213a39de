"""``openai``: any OpenAI-compatible upstream (llama.cpp's llama-server, Ollama, vLLM, OpenAI itself).

``KERNEL_UPSTREAM_URL`` is the upstream's base URL, as the OpenAI SDK's ``base_url`` would be
(``http://127.0.0.1:8080/v1``); requests go to ``<base>/chat/completions``, always streamed, and each
upstream event is parsed once.

The transport is urllib3 (what ``requests`` is built on) used directly: one connection pool per backend,
so per worker process, kept-alive connections reused, and no per-request session machinery. Each
connection leaves TCP's interactive ("ping-pong") mode after sending a request, so an upstream that writes
without ``TCP_NODELAY`` does not wait ~40 ms for our delayed ACK before its second segment (see
:class:`QuickAckConnection`).
"""

import json
import logging
import os
import socket
import urllib.request
from urllib.parse import urlsplit

import orjson
import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    MaxRetryError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)

from ..sockets import readable_now
from .base import (
    Backend,
    BackendTimeout,
    BackendUnavailable,
    RateLimited,
    RejectedRequest,
    UpstreamError,
)

log = logging.getLogger(__name__)

READ_SIZE = 64 * 1024
ERROR_BODY_LIMIT = 64 * 1024
# One upstream event larger than this is not an answer we can relay.
MAX_EVENT_BYTES = 4 * 1024 * 1024
READY_TIMEOUT_S = 3.0
POOL_MAXSIZE = 4096
# Sampling fields forwarded as they are when the client set them.
OPTIONAL_FIELDS = ("top_p", "presence_penalty", "frequency_penalty", "seed", "user", "metadata")
TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", None)  # Linux


class QuickAckConnection(HTTPConnection):
    """An HTTP connection that asks for immediate ACKs while it waits for a response.

    On a reused connection Linux treats the exchange as interactive and delays its ACKs (up to ~40 ms).
    An upstream that writes with Nagle's algorithm on (gevent's pywsgi, Python's ``socketserver``,
    Werkzeug's development server) holds its second small write until the first is acknowledged, so
    every response after the first on a connection would stall. ``TCP_QUICKACK`` after the request is
    sent leaves that mode for the response; we send nothing more until it has been read.
    """

    def getresponse(self, *args, **kwargs):
        if TCP_QUICKACK is not None and self.sock is not None:
            try:
                self.sock.setsockopt(socket.IPPROTO_TCP, TCP_QUICKACK, 1)
            except OSError:
                pass
        return super().getresponse(*args, **kwargs)

    @property
    def is_connected(self):
        """Whether a pooled connection is still usable: nothing to read (no close, no stray bytes) yet."""
        return self.sock is not None and not readable_now(self.sock)


class QuickAckHTTPSConnection(QuickAckConnection, HTTPSConnection):
    pass


class _Pool(HTTPConnectionPool):
    ConnectionCls = QuickAckConnection


class _TLSPool(HTTPSConnectionPool):
    ConnectionCls = QuickAckHTTPSConnection


def connection_pool(base_url, maxsize=POOL_MAXSIZE):
    """``(pool, prefix)``: a urllib3 pool for ``base_url``'s server and what goes before a path in ``urlopen``.

    A connection pool for the one host (no per-request pool lookup), or a proxy manager where the
    environment's proxy settings (read once, here) apply to it.
    """
    parts = urlsplit(base_url)
    options = {"maxsize": maxsize, "block": False, "retries": False}
    ca_bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("SSL_CERT_FILE")
    proxy = None if urllib.request.proxy_bypass(parts.hostname or "") else urllib.request.getproxies().get(parts.scheme)
    if proxy:
        manager = urllib3.ProxyManager(proxy, **options, **({"ca_certs": ca_bundle} if ca_bundle else {}))
        manager.pool_classes_by_scheme = {"http": _Pool, "https": _TLSPool}
        return manager, base_url
    if parts.scheme == "https":
        pool = _TLSPool(parts.hostname, parts.port, **options, **({"ca_certs": ca_bundle} if ca_bundle else {}))
    else:
        pool = _Pool(parts.hostname, parts.port, **options)
    return pool, parts.path


class OpenAIBackend(Backend):
    name = "openai"

    def __init__(self, config, *, base_url=None, api_key=None, model=None, timeout_s=None):
        super().__init__(config)
        self.base_url = (base_url if base_url is not None else config["KERNEL_UPSTREAM_URL"]).rstrip("/")
        if not self.base_url:
            raise ValueError("the openai backend needs KERNEL_UPSTREAM_URL, e.g. http://127.0.0.1:8080/v1")
        self.model = model if model is not None else config["KERNEL_UPSTREAM_MODEL"]
        timeout = timeout_s or config["KERNEL_UPSTREAM_TIMEOUT_S"]
        self.read_timeout = timeout
        self.timeout = urllib3.Timeout(connect=min(10.0, timeout), read=timeout)
        self.pool, self.prefix = connection_pool(self.base_url)
        self.headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        api_key = api_key if api_key is not None else config["KERNEL_UPSTREAM_API_KEY"]
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"

    def close(self):
        if isinstance(self.pool, urllib3.PoolManager):  # a ProxyManager
            self.pool.clear()
        else:
            self.pool.close()

    # -- models and readiness -------------------------------------------------------------------------

    def _get(self, path, timeout):
        response = self._request("GET", path, None, timeout)
        try:
            if response.status != 200:
                raise _error_from(response)
            try:
                return json.loads(response.read(MAX_EVENT_BYTES))
            except (ValueError, HTTPError, OSError):
                raise UpstreamError(f"upstream answered GET {path} with something that is not JSON") from None
        finally:
            response.release_conn()

    def models(self):
        if self.model:
            return [self.model]
        body = self._get("/models", self.timeout)
        data = body.get("data") if isinstance(body, dict) else None
        ids = [m.get("id") for m in data or () if isinstance(m, dict) and m.get("id")]
        if not ids:
            raise UpstreamError("upstream lists no models; set KERNEL_UPSTREAM_MODEL")
        return ids

    def model_for(self, requested):
        return requested or self.model or "default"

    def check_ready(self):
        self._get("/models", urllib3.Timeout(connect=READY_TIMEOUT_S, read=READY_TIMEOUT_S))

    # -- generation -----------------------------------------------------------------------------------

    def payload(self, request):
        body = {
            "messages": request.messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
        }
        model = request.model or self.model
        if model:
            body["model"] = model
        if request.stop:
            body["stop"] = request.stop
        for name in OPTIONAL_FIELDS:
            value = getattr(request, name)
            if value is not None:
                body[name] = value
        return body

    def _request(self, method, path, body, timeout):
        try:
            return self.pool.urlopen(
                method, self.prefix + path, body=body, headers=self.headers, timeout=timeout,
                preload_content=False, redirect=False, retries=False,
            )
        except NewConnectionError as exc:  # before ConnectTimeoutError: urllib3 makes it a subclass
            raise BackendUnavailable(f"upstream at {self.base_url} is unreachable: {_reason(exc)}") from exc
        except ConnectTimeoutError as exc:
            raise BackendUnavailable(f"upstream at {self.base_url} did not accept a connection") from exc
        except ReadTimeoutError as exc:
            raise _silent(timeout.read_timeout) from exc
        except (MaxRetryError, ProtocolError, HTTPError, OSError) as exc:
            raise BackendUnavailable(f"upstream at {self.base_url} is unreachable: {_reason(exc)}") from exc

    def generate(self, request, result):
        # The body is not kept in this frame: orjson's buffer would stay with the stream to its end.
        response = self._request("POST", "/chat/completions", _dumps(self.payload(request)), self.timeout)
        try:
            if response.status != 200:
                raise _error_from(response)
            blocks = _blocks(response)
            yield from self._events(_data_lines(blocks, self.read_timeout), result)
            _drain(blocks)
        finally:
            if response.isclosed():
                response.release_conn()
            else:
                response.close()

    def _events(self, lines, result):
        finish_reason = None
        deltas = 0
        usage = None
        for data in lines:
            if data == b"[DONE]":
                break
            try:
                event = _loads(data)
            except ValueError:
                raise UpstreamError("upstream sent an event that is not JSON") from None
            if not isinstance(event, dict):
                raise UpstreamError("upstream sent an event that is not a JSON object")
            if event.get("error"):
                raise UpstreamError(f"upstream failed mid-stream: {_message(event['error'])}")
            if event.get("usage"):
                usage = event["usage"]
            for choice in event.get("choices") or ():
                if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                    continue
                delta = choice.get("delta") or {}
                text = delta.get("content") if isinstance(delta, dict) else None
                if text and isinstance(text, str):
                    deltas += 1
                    yield text
                if choice.get("finish_reason"):
                    finish_reason = str(choice["finish_reason"])
        else:
            if finish_reason is None:
                raise UpstreamError("upstream ended the stream before finishing")
        result.finish_reason = finish_reason or "stop"
        if isinstance(usage, dict):
            result.set_usage(_count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens")))
        else:  # an upstream that reports no usage: each streamed delta is about one token
            result.set_usage(0, deltas)


def _loads(data):
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:  # NaN or Infinity, as Python's own json writes them in a logprob or timing
        return json.loads(data)


def _dumps(value):
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:  # an integer past 64 bits, or a lone surrogate; json writes both as escapes
        return json.dumps(value, separators=(",", ":")).encode()


def _count(value):
    return value if isinstance(value, int) and value >= 0 else 0


def _blocks(response):
    """The body's bytes, block by block as they arrive.

    A chunked body (what streaming servers send) is read a chunk at a time by urllib3 itself, straight
    from the connection's buffer: one call per event, where ``read1`` would go through urllib3 and
    http.client for each. Otherwise whatever has arrived, up to :data:`READ_SIZE`.
    """
    if response.chunked and response.supports_chunked_reads():
        return response.read_chunked(READ_SIZE, decode_content=True)
    return iter(lambda: response.read1(READ_SIZE), b"")


def _data_lines(blocks, read_timeout):
    """Yield the payload of each ``data:`` line of an SSE byte stream, as bytes, as it arrives."""
    pending = b""
    while True:
        try:
            block = next(blocks, b"")
        except ReadTimeoutError as exc:
            raise _silent(read_timeout) from exc
        except (ProtocolError, HTTPError, OSError) as exc:
            raise UpstreamError("upstream closed the connection mid-stream") from exc
        if not block:
            break
        if pending:
            block = pending + block
        lines = block.split(b"\n")
        pending = lines.pop()
        if len(pending) > MAX_EVENT_BYTES:
            raise UpstreamError(f"upstream sent an event over {MAX_EVENT_BYTES} bytes")
        for line in lines:
            if line.startswith(b"data:"):
                yield line[5:].strip()
    if pending.startswith(b"data:"):
        yield pending[5:].strip()


def _silent(seconds):
    return BackendTimeout(f"upstream sent nothing for {seconds:g} s")


def _drain(blocks):
    """After ``[DONE]``: read what is left (the chunked terminator) so the connection returns to the pool.

    Closing a response with unread bytes would close its connection instead, and the next request
    would pay for a new one.
    """
    for _ in range(4):
        try:
            if not next(blocks, b""):
                break
        except (HTTPError, OSError):
            return


def _error_from(response):
    """Map an upstream's non-200 answer to the error we report."""
    status = response.status
    try:
        raw = response.read(ERROR_BODY_LIMIT) or b""
    except (HTTPError, OSError):
        raw = b""
    try:
        body = json.loads(raw)
        message = _message(body.get("error") or body.get("message") or body.get("detail") or raw[:200])
    except (ValueError, AttributeError):
        message = raw[:200].decode("utf-8", "replace").strip() or response.reason or "no details"
    message = message[:500]
    retry_after = response.headers.get("Retry-After")
    if status in (400, 413, 422):
        return RejectedRequest(f"upstream rejected the request: {message}")
    if status == 429:
        return RateLimited(f"upstream is rate limiting: {message}", retry_after=retry_after)
    if status == 503:
        return BackendUnavailable(f"upstream is unavailable: {message}", retry_after=retry_after)
    if status in (401, 403):
        return UpstreamError(f"upstream refused our credentials ({status}); check KERNEL_UPSTREAM_API_KEY")
    return UpstreamError(f"upstream answered {status}: {message}")


def _message(error):
    if isinstance(error, dict):
        return str(error.get("message") or error)
    if isinstance(error, bytes):
        return error.decode("utf-8", "replace")
    return str(error)


def _reason(exc):
    """The innermost cause of a connection failure, e.g. 'Connection refused', without the URL noise."""
    seen = set()
    while (exc.__cause__ is not None or exc.__context__ is not None) and id(exc) not in seen:
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    reason = getattr(exc, "reason", None)
    if reason is not None and reason is not exc:
        return _reason(reason) if isinstance(reason, BaseException) else str(reason)
    for arg in getattr(exc, "args", ()):
        if isinstance(arg, str) and arg:
            return arg.split("] ", 1)[-1].rsplit(": ", 1)[-1]
    return type(exc).__name__
