"""Chat with a registered instance: ``POST /api/chat/<id>`` and ``POST /api/chat/<id>/chat/completions``.

The same pipeline as kernel2 chat, with this endpoint's documented defaults (``temperature`` 0.7,
``max_tokens`` 2000, ``stream`` true) and its status for invalid requests (422). ``metadata`` goes to the
instance untouched, so the instance's own roles and knowledge apply.

``stream`` defaults to true, as documented, unless the client's ``Accept`` header prefers JSON to an
event stream: the official OpenAI SDK sends ``Accept: application/json`` and leaves ``stream`` out of
non-streamed calls, and expects one ``chat.completion`` back.
"""

from flask import Blueprint, current_app, request

from kernel.auth import require_chat_key
from kernel.chat import build_request
from kernel.chat_api import respond
from kernel.db import get_db
from kernel.errors import ApiError
from kernel.schema import validated_body
from kernel.store import NotFound

from . import store as instances

bp = Blueprint("registry_chat", __name__)

TEMPERATURE = 0.7
MAX_TOKENS = 2000


def stream_default():
    if "Accept" not in request.headers:
        return True
    best = request.accept_mimetypes.best_match(["text/event-stream", "application/json"])
    return best != "application/json"


@bp.post("/api/chat/<instance_id>")
@bp.post("/api/chat/<instance_id>/chat/completions")
def chat(instance_id):
    try:
        row = instances.get_full(get_db(), instance_id)
    except NotFound:
        raise ApiError(404, f"No instance with id {instance_id!r}", code="instance_not_found") from None
    if not row["public"]:
        require_chat_key()  # open unless KERNEL_CHAT_KEYS is set
    body = validated_body("registry_chat_request", status=422)
    backend = current_app.extensions["kernel.registry"].backend_for(row)
    chat_request = build_request(body, temperature=TEMPERATURE, max_tokens=MAX_TOKENS)
    chat_request.metadata = body.get("metadata")
    return respond(backend, chat_request, body, stream_default=stream_default())


def init_app(app):
    app.register_blueprint(bp)
