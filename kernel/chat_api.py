"""Chat routes: ``POST /api/kernel2/chat`` (the documented endpoint) and the OpenAI-style ``/v1`` routes.

Both chat routes run the same handler; they differ only in the default of ``stream``: true on the
kernel2 endpoint as its documentation says, false on ``/v1/chat/completions`` as OpenAI's API has it,
so the official SDKs work unchanged with ``base_url="http://host:8002/v1"``.
"""

import socket

from flask import Blueprint, Response, current_app, g, jsonify, request

from . import backends, chat, requestlog
from .auth import require_chat_key
from .errors import ApiError
from .instruments import STREAMS
from .db import get_db
from .limits import StreamLimit
from .schema import validated_body
from .sockets import readable_now

bp = Blueprint("chat", __name__)
bp.before_request(require_chat_key)

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def backend():
    return backends.loaded(current_app.extensions, current_app.config)


def client_gone_probe(environ):
    """A callable telling whether the client has closed its connection, where the server exposes it."""
    sock = environ.get("gunicorn.socket")
    if sock is None:
        return lambda: False

    def client_gone():
        try:
            if not readable_now(sock):
                return False
            return sock.recv(1, socket.MSG_PEEK) == b""  # readable: end of stream, or pipelined bytes
        except (OSError, ValueError):
            return True

    return client_gone


def handle_chat(stream_default):
    body = validated_body("chat_request")
    chat_request = chat.build_request(body)
    composed = chat.compose(
        chat_request.messages, body.get("metadata") or {}, get_db, current_app.config["KERNEL_L0_TOP_K"]
    )
    chat_request.messages = composed.messages
    return respond(backend(), chat_request, body, stream_default, composed.sources)


def respond(chat_backend, chat_request, body, stream_default, sources=()):
    """Run ``chat_request`` on ``chat_backend`` and answer it: an SSE stream, or one ``chat.completion``.

    ``body`` is the validated request body (for ``stream`` and ``stream_options``); ``sources`` the
    documents retrieval drew on, named in the first chunk. Shared by every chat route, the registry's
    included.
    """
    limit = current_app.extensions["kernel.stream_limit"]
    client = g.get("client_id") or request.remote_addr
    if not limit.acquire(client):
        raise ApiError(429, f"Too many concurrent requests from this client (KERNEL_MAX_STREAMS_PER_CLIENT="
                       f"{limit.limit}); wait for one to finish", code="too_many_streams", headers={"Retry-After": "1"})
    STREAMS.inc()

    def done():
        limit.release(client)
        STREAMS.dec()

    try:
        response = _answer(chat_backend, chat_request, body, stream_default, sources)
    except BaseException:
        done()
        raise
    response.call_on_close(done)
    return response


def _answer(chat_backend, chat_request, body, stream_default, sources):
    stream = body.get("stream", stream_default)
    generation = chat.Generation(chat_backend, chat_request, client_gone_probe(request.environ), sources,
                                 current_app.extensions["kernel.shutdown"].expired)
    generation.streaming = stream
    request.environ[requestlog.BACKEND] = chat_backend.name
    request.environ[requestlog.STREAM] = generation
    ping_s = current_app.config["KERNEL_SSE_PING_S"]
    try:
        first = generation.first(timeout=ping_s if stream else None)
        if not stream:
            return jsonify(generation.text(first))
    except chat.ClientGone:
        return Response(status=499)  # nobody is listening; the status is for the access log
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    events = generation.events(first, include_usage, ping_s)
    return Response(events, mimetype="text/event-stream", headers=SSE_HEADERS)


@bp.post("/api/kernel2/chat")
def kernel2_chat():
    return handle_chat(stream_default=True)


@bp.post("/v1/chat/completions")
def openai_chat_completions():
    return handle_chat(stream_default=False)


@bp.get("/v1/models")
def list_models():
    models = backend().models()
    return jsonify(
        {
            "object": "list",
            "data": [{"id": m, "object": "model", "created": 0, "owned_by": "kernel-chat"} for m in models],
        }
    )


def init_app(app):
    app.extensions["kernel.stream_limit"] = StreamLimit(app.config["KERNEL_MAX_STREAMS_PER_CLIENT"])
    app.register_blueprint(bp)
