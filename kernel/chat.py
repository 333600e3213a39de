"""The chat pipeline: a validated request body in, SSE bytes or a ``chat.completion`` object out.

Knows the OpenAI wire format, the backend contract and the store; never touches the HTTP request. The
blueprint hands it the validated body, the backend, a way to open the store, and a callable that says
whether the client is still connected.
"""

import hashlib
import logging
import secrets
import time
from functools import lru_cache
from typing import NamedTuple

import orjson

from . import __version__, sse
from .backends.base import BackendError, ChatRequest, Result
from .errors import ApiError, error_body, from_exception
from .relay import Relay
from .store import NotFound, knowledge, roles

log = logging.getLogger(__name__)

DEFAULT_TEMPERATURE = 0.1
DEFAULT_MAX_TOKENS = 2000
# How often a waiting stream checks whether its client is still connected.
PROBE_INTERVAL_S = 1.0


def text_of(content):
    """A message's content as one string: a string as is, text parts joined."""
    if isinstance(content, str):
        return content
    return "".join(part["text"] for part in content)


def build_request(body, temperature=DEFAULT_TEMPERATURE, max_tokens=DEFAULT_MAX_TOKENS):
    """A :class:`ChatRequest` from a body that passed the ``chat_request`` schema.

    ``temperature`` and ``max_tokens`` are the defaults of the route the body came to.
    """
    messages = []
    for message in body["messages"]:
        item = {"role": message["role"], "content": text_of(message["content"])}
        if "name" in message:
            item["name"] = message["name"]
        messages.append(item)
    stop = body.get("stop")
    return ChatRequest(
        messages=messages,
        model=body.get("model") or "",
        temperature=temperature if body.get("temperature") is None else body["temperature"],
        max_tokens=body.get("max_completion_tokens") or body.get("max_tokens") or max_tokens,
        top_p=body.get("top_p"),
        stop=[stop] if isinstance(stop, str) else list(stop or []),
        presence_penalty=body.get("presence_penalty"),
        frequency_penalty=body.get("frequency_penalty"),
        seed=body.get("seed"),
        user=body.get("user"),
    )


REFERENCE_OPEN = "<reference_knowledge>"
REFERENCE_CLOSE = "</reference_knowledge>"
REFERENCE_INTRO = (
    "Excerpts from the owner's documents that may help with the latest question. Use them when they "
    "are relevant, and say so when they do not answer it."
)


def reference_section(passages):
    """The retrieved passages as one clearly delimited block, each under its document's title."""
    if not passages:
        return ""
    blocks = [f'[{i}] From "{p.title}":\n{p.content}' for i, p in enumerate(passages, start=1)]
    return "\n\n".join([REFERENCE_OPEN, REFERENCE_INTRO, *blocks, REFERENCE_CLOSE])


class Composed(NamedTuple):
    messages: list
    sources: list  # [{"document_id", "title"}] of the documents retrieval drew on, in order


def sources_of(passages):
    """Each document the passages came from, once, best first."""
    seen = {}
    for passage in passages:
        seen.setdefault(passage.document_id, {"document_id": passage.document_id, "title": passage.title})
    return list(seen.values())


def compose(messages, metadata, get_db, top_k):
    """Apply ``metadata.role_id`` and ``metadata.enable_l0_retrieval`` to the messages.

    A role's system prompt replaces the client's system message(s); retrieved knowledge is appended to
    the system message. Either way the result has one system message, first. ``default_role`` names the
    instance's default role, or none (the client's messages stand). ``get_db`` opens the store only when
    it is needed. Returns a :class:`Composed`.
    """
    role = None
    if metadata.get("role_id"):
        try:
            role = roles.resolve(get_db(), metadata["role_id"])
        except NotFound:
            raise ApiError(
                404, f"No role with id {metadata['role_id']!r}", code="role_not_found", param="metadata.role_id"
            ) from None
    retrieval = metadata.get("enable_l0_retrieval")
    if retrieval is None:
        retrieval = bool(role and role["enable_l0_retrieval"])
    section, sources = "", []
    if retrieval:
        question = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        passages = knowledge.search(get_db(), question, top_k)
        section, sources = reference_section(passages), sources_of(passages)
    if role is None and not section:
        return Composed(messages, sources)
    if role is not None:
        system = role["system_prompt"]
    else:
        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system" and m["content"])
    if section:
        system = f"{system}\n\n{section}" if system else section
    return Composed([{"role": "system", "content": system}] + [m for m in messages if m["role"] != "system"], sources)


@lru_cache(maxsize=None)
def fingerprint(backend_name):
    """The ``system_fingerprint`` of a backend's answers: this release and the backend, hashed once."""
    digest = hashlib.sha256(f"kernel-chat {__version__} {backend_name}".encode()).hexdigest()
    return "fp_" + digest[:10]


class Completion:
    """One response's identity (id, created, model) and its encodings, chunk by chunk or whole."""

    def __init__(self, model, system_fingerprint, sources=()):
        self.sources = list(sources)
        self.id = "chatcmpl-" + secrets.token_hex(16)
        self.created = int(time.time())
        self.model = model
        self.system_fingerprint = system_fingerprint
        head = orjson.dumps(self._head("chat.completion.chunk"))
        # Content deltas are the hot path: only the text is serialised per chunk.
        self._content_head, self._content_tail = sse.around(
            head[:-1] + b',"choices":[{"index":0,"delta":{"content":', b'},"logprobs":null,"finish_reason":null}]}'
        )

    def _head(self, obj):
        return {
            "id": self.id,
            "object": obj,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": self.system_fingerprint,
        }

    def content(self, text):
        return self._content_head + orjson.dumps(text) + self._content_tail

    def chunk(self, delta, finish_reason=None):
        event = self._head("chat.completion.chunk")
        event["choices"] = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]
        return sse.encode(event)

    def first_chunk(self):
        """The role chunk; it also names the documents retrieval drew on, when there are any."""
        event = self._head("chat.completion.chunk")
        event["choices"] = [
            {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
        ]
        if self.sources:
            event["sources"] = self.sources
        return sse.encode(event)

    def usage_chunk(self, usage):
        event = self._head("chat.completion.chunk")
        event["choices"] = []
        event["usage"] = usage
        return sse.encode(event)

    def whole(self, text, result):
        body = self._head("chat.completion")
        body["choices"] = [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": result.finish_reason,
            }
        ]
        body["usage"] = result.usage
        if self.sources:
            body["sources"] = self.sources
        return body


class ClientGone(Exception):
    """The client closed its connection before the answer was ready."""


class ShuttingDown(BackendError):
    """This worker is stopping and the answer did not finish in time."""

    status = 503
    code = "shutting_down"
    retry_after = 1


class Generation:
    """A started generation: the backend runs in a relay; the first items (or the failure) are awaited.

    Every wait wakes at least once per :data:`PROBE_INTERVAL_S` to ask ``client_gone()``, so a client
    that leaves stops its generation promptly, even while the backend is silent.
    """

    def __init__(self, backend, request, client_gone=lambda: False, sources=(), stopping=lambda: False):
        self.end = None  # why it ended: done, client_gone, backend_error, error
        self.error_code = None  # the backend error's code, when it ended so
        self.streaming = True  # False: the answer goes out whole (stream: false)
        self.backend = backend
        self.request = request
        self.client_gone = client_gone
        self.stopping = stopping
        self.result = Result()
        self.completion = Completion(backend.model_for(request.model), fingerprint(backend.name), sources)
        self.relay = Relay(backend.generate(request, self.result))

    def _next(self, timeout=None):
        """The next batch as :meth:`Relay.next_batch` gives it; ``[]`` only once ``timeout`` has passed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self.stopping():
                raise ShuttingDown("the server is restarting and this answer did not finish in time; try again")
            wait = PROBE_INTERVAL_S if deadline is None else min(PROBE_INTERVAL_S, deadline - time.monotonic())
            batch = self.relay.next_batch(max(wait, 0))
            if batch != []:
                return batch
            if self.client_gone():
                self.end = "client_gone"
                raise ClientGone()
            if deadline is not None and time.monotonic() >= deadline:
                return batch

    def _failed(self, exc):
        if self.end is not None:
            return
        if isinstance(exc, BackendError):
            self.end, self.error_code = "backend_error", exc.code
        elif isinstance(exc, (GeneratorExit, ClientGone)):
            self.end = "client_gone"
        else:
            self.end = "error"

    def first(self, timeout):
        """Wait up to ``timeout`` s for the first deltas. Errors raised here still become an HTTP status."""
        try:
            return self._next(timeout)
        except BaseException as exc:
            self._failed(exc)
            self.relay.close()
            raise

    def text(self, first):
        """Collect the whole answer (``stream: false``)."""
        parts = list(first or ())
        try:
            if first is not None:
                while (batch := self._next()) is not None:
                    parts.extend(batch)
            self.end = "done"
        except BaseException as exc:
            self._failed(exc)
            raise
        finally:
            self.relay.close()
        return self.completion.whole("".join(parts), self.result)

    def events(self, first, include_usage, ping_s):
        """The SSE body. Errors after the first byte become one error event, then ``[DONE]``."""
        completion = self.completion
        try:
            out = [completion.first_chunk()]
            out.extend(completion.content(text) for text in first or ())
            yield b"".join(out)
            batch = first
            while batch is not None:
                batch = self._next(ping_s)
                if batch:
                    yield b"".join([completion.content(text) for text in batch])
                elif batch is not None:
                    yield sse.PING
            tail = [completion.chunk({}, self.result.finish_reason)]
            if include_usage:
                tail.append(completion.usage_chunk(self.result.usage))
            tail.append(sse.DONE)
            self.end = "done"
            yield b"".join(tail)
        except ClientGone:
            log.info("client went away while waiting for the backend; generation stopped")
        except GeneratorExit:  # the client went away: the server closes the response at the next write
            self.end = self.end or "client_gone"
            raise
        except Exception as exc:
            status, message, code, _, _ = from_exception(exc)
            self._failed(exc)
            if isinstance(exc, BackendError):
                log.warning("backend error mid-stream (%s): %s", status, message)
            else:
                log.exception("error mid-stream")
            yield sse.encode(error_body(status, message, code)) + sse.DONE
        finally:
            self.relay.close()
