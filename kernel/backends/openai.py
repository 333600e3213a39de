"""``openai``: any OpenAI-compatible upstream (llama.cpp's llama-server, Ollama, vLLM, OpenAI itself).

``KERNEL_UPSTREAM_URL`` is the upstream's base URL, as the OpenAI SDK's ``base_url`` would be
(``http://127.0.0.1:8080/v1``); requests go to ``<base>/chat/completions``, always streamed, and each
upstream event is parsed once. One pooled :class:`requests.Session` per backend, so per worker process.
"""

import json
import logging
import os

import requests
from urllib3.exceptions import ProtocolError, ReadTimeoutError

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
READY_TIMEOUT_S = 3.0
# Sampling fields forwarded as they are when the client set them.
OPTIONAL_FIELDS = ("top_p", "presence_penalty", "frequency_penalty", "seed", "user")


class OpenAIBackend(Backend):
    name = "openai"

    def __init__(self, config):
        super().__init__(config)
        self.base_url = config["KERNEL_UPSTREAM_URL"].rstrip("/")
        if not self.base_url:
            raise ValueError("the openai backend needs KERNEL_UPSTREAM_URL, e.g. http://127.0.0.1:8080/v1")
        self.model = config["KERNEL_UPSTREAM_MODEL"]
        timeout = config["KERNEL_UPSTREAM_TIMEOUT_S"]
        self.timeout = (min(10.0, timeout), timeout)
        self.session = requests.Session()
        # Proxy and CA settings from the environment are read once here, not on every request.
        self.session.proxies = requests.utils.get_environ_proxies(self.base_url)
        self.session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
        self.session.trust_env = False
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=1024, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        if config["KERNEL_UPSTREAM_API_KEY"]:
            self.session.headers["Authorization"] = f"Bearer {config['KERNEL_UPSTREAM_API_KEY']}"

    # -- models and readiness -------------------------------------------------------------------------

    def _get(self, path, timeout):
        try:
            response = self.session.get(self.base_url + path, timeout=timeout)
        except requests.Timeout as exc:
            raise BackendTimeout(f"upstream did not answer GET {path} in {timeout} s") from exc
        except requests.RequestException as exc:
            raise BackendUnavailable(f"upstream at {self.base_url} is unreachable: {_reason(exc)}") from exc
        with response:
            if response.status_code != 200:
                raise _error_from(response)
            return response.json()

    def models(self):
        if self.model:
            return [self.model]
        body = self._get("/models", self.timeout)
        ids = [m.get("id") for m in body.get("data", []) if isinstance(m, dict) and m.get("id")]
        if not ids:
            raise UpstreamError("upstream lists no models; set KERNEL_UPSTREAM_MODEL")
        return ids

    def model_for(self, requested):
        return requested or self.model or "default"

    def check_ready(self):
        self._get("/models", READY_TIMEOUT_S)

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

    def generate(self, request, result):
        try:
            response = self.session.post(
                self.base_url + "/chat/completions",
                json=self.payload(request),
                headers={"Accept": "text/event-stream"},
                stream=True,
                timeout=self.timeout,
            )
        except requests.ConnectTimeout as exc:
            raise BackendUnavailable(f"upstream at {self.base_url} did not accept a connection") from exc
        except requests.Timeout as exc:
            raise _silent(self.timeout[1]) from exc
        except requests.RequestException as exc:
            raise BackendUnavailable(f"upstream at {self.base_url} is unreachable: {_reason(exc)}") from exc
        try:
            if response.status_code != 200:
                raise _error_from(response)
            yield from self._events(response, result)
            _release(response)
        finally:
            response.close()

    def _events(self, response, result):
        finish_reason = None
        deltas = 0
        usage = None
        for data in _data_lines(response.raw, self.timeout[1]):
            if data == b"[DONE]":
                break
            try:
                event = json.loads(data)
            except ValueError:
                raise UpstreamError("upstream sent an event that is not JSON") from None
            if not isinstance(event, dict):
                raise UpstreamError("upstream sent an event that is not a JSON object")
            if event.get("error"):
                raise UpstreamError(f"upstream failed mid-stream: {_message(event['error'])}")
            if event.get("usage"):
                usage = event["usage"]
            for choice in event.get("choices") or ():
                if choice.get("index", 0) != 0:
                    continue
                text = (choice.get("delta") or {}).get("content")
                if text:
                    deltas += 1
                    yield text
                if choice.get("finish_reason"):
                    finish_reason = choice["finish_reason"]
        else:
            if finish_reason is None:
                raise UpstreamError("upstream ended the stream before finishing")
        result.finish_reason = finish_reason or "stop"
        if usage:
            result.set_usage(usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0)
        else:  # an upstream that reports no usage: each streamed delta is about one token
            result.set_usage(0, deltas)


def _data_lines(raw, read_timeout):
    """Yield the payload of each ``data:`` line of an SSE byte stream, as bytes, as it arrives."""
    pending = b""
    while True:
        try:
            block = raw.read1(READ_SIZE)
        except ReadTimeoutError as exc:
            raise _silent(read_timeout) from exc
        except (ProtocolError, OSError) as exc:
            raise UpstreamError("upstream closed the connection mid-stream") from exc
        if not block:
            break
        lines = (pending + block).split(b"\n")
        pending = lines.pop()
        for line in lines:
            if line.startswith(b"data:"):
                yield line[5:].strip()
    if pending.startswith(b"data:"):
        yield pending[5:].strip()


def _silent(seconds):
    return BackendTimeout(f"upstream sent nothing for {seconds:g} s")


def _release(response):
    """After ``[DONE]``: read what is left (the chunked terminator) so the connection returns to the pool.

    Closing a response with unread bytes would close its connection instead, and the next request
    would pay for a new one.
    """
    raw = response.raw
    for _ in range(4):
        try:
            if not raw.read1(READ_SIZE):
                break
        except (ProtocolError, ReadTimeoutError, OSError):
            return
    raw.release_conn()


def _error_from(response):
    """Map an upstream's non-200 answer to the error we report."""
    status = response.status_code
    raw = response.raw.read(ERROR_BODY_LIMIT, decode_content=True) or b""
    try:
        body = json.loads(raw)
        message = _message(body.get("error") or body.get("message") or body.get("detail") or raw[:200])
    except (ValueError, AttributeError):
        message = raw[:200].decode("utf-8", "replace").strip() or response.reason or "no details"
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
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__
    for arg in getattr(exc, "args", ()):
        if isinstance(arg, str) and arg:
            return arg.split("] ", 1)[-1]
    return type(exc).__name__
