"""Chat routes: ``POST /api/kernel2/chat`` (the documented endpoint) and the OpenAI-style ``/v1`` routes.

Both chat routes run the same handler; they differ only in the default of ``stream``: true on the
kernel2 endpoint as its documentation says, false on ``/v1/chat/completions`` as OpenAI's API has it,
so the official SDKs work unchanged with ``base_url="http://host:8002/v1"``.
"""

import json
import select

from flask import Blueprint, Response, current_app, jsonify, request

from . import chat
from .errors import ApiError
from .schema import validate

bp = Blueprint("chat", __name__)

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def backend():
    return current_app.extensions["kernel.backend"]


def json_body():
    """The request body parsed as JSON, or a 400 that says why not."""
    raw = request.get_data(cache=False)
    if not raw.strip():
        raise ApiError(400, "Request body is empty; send a JSON object", code="invalid_json")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"Request body is not valid JSON: {exc}", code="invalid_json") from None


def client_gone_probe(environ):
    """A callable telling whether the client has closed its connection, where the server exposes it."""
    sock = environ.get("gunicorn.socket")
    if sock is None:
        return lambda: False

    def client_gone():
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            return bool(readable) and sock.recv(1, 2) == b""  # 2 = MSG_PEEK: look, don't consume
        except OSError:
            return True

    return client_gone


def handle_chat(stream_default):
    body = json_body()
    validate("chat_request", body)
    stream = body.get("stream", stream_default)
    generation = chat.Generation(backend(), chat.build_request(body), client_gone_probe(request.environ))
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
    app.register_blueprint(bp)
