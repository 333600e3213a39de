"""L0 knowledge: ``/api/kernel2/documents``. Admin key required.

Add a document as JSON ``{"title", "content", "source"?}`` or as a multipart upload of a ``.txt`` or
``.md`` file (field ``file``, optional field ``title``). Identical content is stored once: adding it
again answers 200 with the document already there, instead of 201.
"""

from pathlib import PurePath

from flask import Blueprint, current_app, jsonify, request

from .auth import require_admin
from .db import get_db, offload
from .errors import ApiError
from .schema import page_arguments, validated_body
from .security import accepts_multipart
from .store import knowledge

bp = Blueprint("documents", __name__, url_prefix="/api/kernel2/documents")
bp.before_request(require_admin)

TEXT_SUFFIXES = (".txt", ".md", ".markdown")


def _upload():
    """(title, content, source) from a multipart upload."""
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        raise ApiError(400, "Multipart uploads need the document in a field named 'file'", param="file")
    name = PurePath(upload.filename).name
    if not name.lower().endswith(TEXT_SUFFIXES):
        raise ApiError(415, f"{name!r} is not a text document; upload .txt or .md files", param="file")
    try:
        content = upload.read().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ApiError(415, f"{name!r} is not UTF-8 text", param="file") from None
    title = (request.form.get("title") or "").strip() or PurePath(name).stem
    return title[:300], content, name


@bp.post("")
@accepts_multipart
def add_document():
    if request.mimetype == "multipart/form-data":
        title, content, source = _upload()
    else:
        body = validated_body("document_create")
        title, content, source = body["title"], body["content"], body.get("source")
    document, created = offload(
        knowledge.add, get_db(), title, content, source, chunk_chars=current_app.config["KERNEL_L0_CHUNK_CHARS"]
    )
    return jsonify(document), 201 if created else 200


@bp.get("")
def list_documents():
    limit, offset = page_arguments()
    documents, total = knowledge.page(get_db(), limit, offset)
    return jsonify({"object": "list", "data": documents, "total": total, "limit": limit, "offset": offset})


@bp.get("/<document_id>")
def get_document(document_id):
    return jsonify(knowledge.get(get_db(), document_id))


@bp.delete("/<document_id>")
def delete_document(document_id):
    offload(knowledge.delete, get_db(), document_id)
    return "", 204


def init_app(app):
    app.register_blueprint(bp)
