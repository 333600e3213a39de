"""``GET /openapi.json``: an OpenAPI 3.1 document of every route, built once when the app starts.

One source of truth: every ``schemas/*.json`` file (the request schemas the validator uses, the error
envelope and the response bodies) is embedded as ``components.schemas.<file name>``, with only its
``$ref`` values rewritten to point inside the document; nothing here restates a field. This module adds
what the schemas cannot say: the routes, their parameters, who may call them, and which statuses they
answer, each error in the envelope of ``schemas/error.json`` with its ``code`` equal to the status.

``tests/test_openapi.py`` checks that every route of the app is here and fuzzes the running server
against this document with schemathesis.
"""

import json
from pathlib import Path

from flask import Blueprint, Response, current_app

from . import __version__
from .schema import SCHEMA_DIR

bp = Blueprint("openapi", __name__)

JSON = "application/json"
SSE = "text/event-stream"

# When each error status is answered; operations list the statuses they can answer.
ERRORS = {
    400: "Invalid request: the body is not JSON or breaks the schema (`error.param` names the field)",
    401: "The key is missing or not valid (`WWW-Authenticate: Bearer`)",
    403: "The `Host` header names a host this server does not answer to (`KERNEL_ALLOWED_HOSTS`)",
    404: "Not found",
    409: "Conflict with the stored state",
    413: "The body is larger than `KERNEL_MAX_BODY_BYTES`",
    415: "The body is not `application/json` (or `multipart/form-data` where the route takes uploads)",
    422: "Invalid request: the body or a query parameter breaks the schema (`error.param` names the field)",
    429: "Too many concurrent chats from this client (`KERNEL_MAX_STREAMS_PER_CLIENT`), or the upstream is rate "
         "limiting (with `Retry-After`)",
    502: "The upstream answered with an error or something that is not a valid answer",
    503: "The backend is unavailable or busy, or the database stayed locked (with `Retry-After` where known)",
    504: "The backend was silent for `KERNEL_UPSTREAM_TIMEOUT_S`",
}
ERROR_HEADERS = {
    401: {"WWW-Authenticate": {"required": True, "schema": {"type": "string", "pattern": "^Bearer"}}},
    405: {"Allow": {"required": True, "schema": {"type": "string"}}},
    429: {"Retry-After": {"$ref": "#/components/headers/RetryAfter"}},
    503: {"Retry-After": {"$ref": "#/components/headers/RetryAfter"}},
}
EVERY_ROUTE = (403,)  # kernel/security.py checks the Host header of every request
BODY_ERRORS = (413, 415)  # every route that reads a body
BACKEND_ERRORS = (429, 502, 503, 504)  # every route that runs a chat on a backend
DB_ERRORS = (503,)  # the database stayed locked past its busy timeout

ADMIN = [{"adminKey": []}]
CHAT = [{}, {"chatKey": []}, {"adminKey": []}]  # open unless KERNEL_CHAT_KEYS is set
ADMIN_OR_INSTANCE = [{"adminKey": []}, {"instanceSecret": []}]
INSTANCE = [{"instanceSecret": []}]


# -- the schemas -------------------------------------------------------------------------------------------


def _rewrite_refs(node, name):
    """``node`` with each ``$ref`` pointing into ``#/components/schemas/``: ``#/$defs/x`` of file ``name``,
    ``other.json#/$defs/x`` and ``other.json`` become ``#/components/schemas/{name|other}/$defs/x``."""
    if isinstance(node, list):
        return [_rewrite_refs(item, name) for item in node]
    if not isinstance(node, dict):
        return node
    rewritten = {}
    for key, value in node.items():
        if key == "$ref" and isinstance(value, str):
            target, _, pointer = value.partition("#")
            value = f"#/components/schemas/{Path(target).stem if target else name}{pointer}"
        rewritten[key] = _rewrite_refs(value, name)
    return rewritten


def component_schemas(directory=SCHEMA_DIR):
    """Every ``<name>.json`` in ``directory`` as ``{name: schema}``, ready for ``components.schemas``."""
    components = {}
    for path in sorted(Path(directory).glob("*.json")):
        schema = json.loads(path.read_text(encoding="utf-8"))
        schema = {k: v for k, v in schema.items() if k not in ("$id", "$schema")}  # the document is the base
        components[path.stem] = _rewrite_refs(schema, path.stem)
    return components


def ref(name, pointer=""):
    return {"$ref": f"#/components/schemas/{name}{pointer}"}


# -- building blocks ----------------------------------------------------------------------------------------


def path_parameter(name, description):
    return {"name": name, "in": "path", "required": True, "description": description, "schema": {"type": "string"}}


def page_parameters():
    """``limit`` and ``offset``, with the schema the server validates them against."""
    return [
        {"name": name, "in": "query", "required": False, "description": description,
         "schema": ref("page_query", f"/properties/{name}")}
        for name, description in (("limit", "Items per page (default 50)"), ("offset", "Items to skip (default 0)"))
    ]


def json_body(schema_name, description=None):
    body = {"required": True, "content": {JSON: {"schema": ref(schema_name)}}}
    if description:
        body["description"] = description
    return body


def sse_content(event_schema):
    """``text/event-stream`` whose events are ``event_schema`` or the error envelope, then ``[DONE]``.

    In OpenAPI 3.1 the schema of an event stream describes one event: ``{"data": ..., "event": ...}``.
    """
    data = {
        "type": "string",
        "if": {"const": "[DONE]"},
        "else": {"contentMediaType": JSON, "contentSchema": {"anyOf": [event_schema, ref("error")]}},
    }
    return {"schema": {"type": "object", "required": ["data"], "properties": {"data": data}}}


def ok(description, schema=None, media_type=JSON, links=None):
    response = {"description": description, "headers": {"X-Request-ID": {"$ref": "#/components/headers/RequestId"}}}
    if schema is not None:
        response["content"] = {media_type: {"schema": schema}}
    if links:
        response["links"] = links
    return response


def id_links(field, *operation_ids):
    """Links from a response holding ``field`` to the operations that take it as their path parameter."""
    return {op[0].upper() + op[1:]: {"operationId": op, "parameters": {field: f"$response.body#/{field}"}}
            for op in operation_ids}


def error(status, description=None):
    return {
        "description": description or ERRORS[status],
        "headers": {"X-Request-ID": {"$ref": "#/components/headers/RequestId"}, **ERROR_HEADERS.get(status, {})},
        "content": {JSON: {"schema": {"allOf": [ref("error"), {"properties": {"code": {"const": status}}}]}}},
    }


def responses(success, *statuses, **described):
    """``{status: response}``: ``success`` (``{status: response}``) plus the error statuses, with the
    general descriptions of :data:`ERRORS` or, as ``e404="No such role"``, one of the operation's own."""
    result = {str(status): response for status, response in success.items()}
    for status in sorted({*EVERY_ROUTE, *statuses} | {int(name[1:]) for name in described}):
        result[str(status)] = error(status, described.get(f"e{status}"))
    return result


def operation(tag, operation_id, summary, description, responses_, *, parameters=(), body=None, security=None):
    op = {"tags": [tag], "operationId": operation_id, "summary": summary, "description": description}
    if parameters:
        op["parameters"] = list(parameters)
    if body is not None:
        op["requestBody"] = body
    if security is not None:
        op["security"] = security
    op["responses"] = responses_
    return op


# -- the routes ---------------------------------------------------------------------------------------------


def chat_answer():
    """The 200 of a chat route: an event stream of chunks, or one ``chat.completion``."""
    answer = ok("The answer: a stream of `chat.completion.chunk` events ending with `data: [DONE]` (an error after "
                "the stream started is one event holding the envelope, then `[DONE]`), or one `chat.completion` "
                "with `\"stream\": false`", ref("responses", "/$defs/chat_completion"))
    answer["content"][SSE] = sse_content(ref("responses", "/$defs/chat_completion_chunk"))
    return {200: answer}


def _chat_paths():
    def chat(operation_id, summary, stream_default):
        return operation(
            "chat", operation_id, summary,
            f"OpenAI Chat Completions request plus `metadata` (`role_id`, `enable_l0_retrieval`); `stream` defaults "
            f"to {stream_default}. See docs/protocol.md.",
            responses(chat_answer(), 400, 401, *BODY_ERRORS, *BACKEND_ERRORS,
                      e404="`metadata.role_id` names no stored role (`role_not_found`)"),
            body=json_body("chat_request"), security=CHAT,
        )

    return {
        "/api/kernel2/chat": {"post": chat("kernel2Chat", "Chat (kernel2): streams by default", "true")},
        "/v1/chat/completions": {"post": chat("createChatCompletion", "Chat (OpenAI): one answer by default", "false")},
        "/v1/models": {
            "get": operation(
                "chat", "listModels", "The backend's models", "The models the backend serves, as OpenAI lists them.",
                responses({200: ok("The models", ref("responses", "/$defs/model_list"))}, 401, 502, 503, 504),
                security=CHAT,
            )
        },
    }


def _roles_paths():
    role = ref("responses", "/$defs/role")
    role_id = path_parameter("role_id", "The role's id (a UUID)")
    return {
        "/api/kernel2/roles": {
            "post": operation(
                "roles", "createRole", "Store a persona", "`is_default` makes it the persona `default_role` names.",
                responses({201: ok("The role", role, links=id_links("role_id", "getRole", "updateRole", "deleteRole"))},
                          400, 401, *BODY_ERRORS, *DB_ERRORS,
                          e409="A role with that name already exists (names are unique regardless of case)"),
                body=json_body("role_create"), security=ADMIN,
            ),
            "get": operation(
                "roles", "listRoles", "Every stored persona", "With `default_role_id`, the role marked default.",
                responses({200: ok("The roles", ref("responses", "/$defs/role_list"))}, 401, *DB_ERRORS),
                security=ADMIN,
            ),
        },
        "/api/kernel2/roles/{role_id}": {
            "parameters": [role_id],
            "get": operation(
                "roles", "getRole", "One persona", "",
                responses({200: ok("The role", role)}, 401, *DB_ERRORS, e404="No such role"), security=ADMIN,
            ),
            "patch": operation(
                "roles", "updateRole", "Change a persona", "Send the fields to change, at least one.",
                responses({200: ok("The role, changed", role)}, 400, 401, *BODY_ERRORS, *DB_ERRORS,
                          e404="No such role", e409="A role with that name already exists"),
                body=json_body("role_update"), security=ADMIN,
            ),
            "delete": operation(
                "roles", "deleteRole", "Delete a persona", "",
                responses({204: ok("Deleted")}, 401, *DB_ERRORS, e404="No such role"), security=ADMIN,
            ),
        },
    }


def _documents_paths():
    document = ref("responses", "/$defs/document")
    document_id = path_parameter("document_id", "The document's id (a UUID)")
    upload = {
        "type": "object",
        "required": ["file"],
        "properties": {
            "file": {"type": "string", "format": "binary",
                     "description": "A UTF-8 text file named `*.txt`, `*.md` or `*.markdown`; other files get 415"},
            "title": {"type": "string", "description": "Defaults to the file's name without its suffix"},
        },
    }
    file_encoding = {
        "contentType": "text/plain, text/markdown",
        "headers": {"Content-Disposition": {"schema": {"type": "string"},
                                            "example": 'form-data; name="file"; filename="notes.md"'}},
    }
    body = {
        "required": True,
        "description": "The document as JSON, or a multipart upload of a text file",
        "content": {JSON: {"schema": ref("document_create")},
                    "multipart/form-data": {"schema": upload, "encoding": {"file": file_encoding}}},
    }
    document_links = id_links("document_id", "getDocument", "deleteDocument")
    return {
        "/api/kernel2/documents": {
            "post": operation(
                "documents", "addDocument", "Add a document to the L0 knowledge",
                "Identical content is stored once: adding it again answers 200 with the stored document.",
                responses({201: ok("Stored", document, links=document_links),
                           200: ok("Already stored: the same content", document, links=document_links)},
                          400, 401, *BODY_ERRORS, *DB_ERRORS,
                          e415="A body that is neither JSON nor multipart, or an upload that is not a UTF-8 "
                               "`.txt` or `.md` file"),
                body=body, security=ADMIN,
            ),
            "get": operation(
                "documents", "listDocuments", "The stored documents, a page at a time", "",
                responses({200: ok("A page of documents", ref("responses", "/$defs/document_list"))},
                          401, *DB_ERRORS, e400="`limit` or `offset` is not a whole number in range"),
                parameters=page_parameters(), security=ADMIN,
            ),
        },
        "/api/kernel2/documents/{document_id}": {
            "parameters": [document_id],
            "get": operation(
                "documents", "getDocument", "One document, with its content", "",
                responses({200: ok("The document", ref("responses", "/$defs/document_with_content"))},
                          401, *DB_ERRORS, e404="No such document"),
                security=ADMIN,
            ),
            "delete": operation(
                "documents", "deleteDocument", "Delete a document", "Its chunks leave the index.",
                responses({204: ok("Deleted")}, 401, *DB_ERRORS, e404="No such document"), security=ADMIN,
            ),
        },
    }


def _registry_paths():
    instance = ref("responses", "/$defs/instance")
    instance_id = path_parameter("instance_id", "The instance's id (a UUID)")
    unknown = "No such instance (`instance_not_found`)"
    chat = operation(
        "registry", "chatWithInstance", "Chat with a registered instance",
        "The kernel2 chat request with this endpoint's defaults: `temperature` 0.7 (0-1), `max_tokens` 2000, "
        "`stream` true unless `Accept` prefers `application/json`. Errors of the instance are passed on. "
        "See docs/registry.md.",
        responses(chat_answer(), 401, 422, *BODY_ERRORS, *BACKEND_ERRORS,
                  e400="The instance refused the request (`rejected_by_backend`)", e404=unknown),
        body=json_body("registry_chat_request"), security=CHAT,
    )
    return {
        "/api/instances": {
            "post": operation(
                "registry", "createInstance", "Register an instance",
                "With `endpoint` the instance is `direct` (the registry calls it), without it `tunnel` (its "
                "connector opens a WebSocket to the registry).",
                responses({201: ok("The instance, its secret (shown once) and its connect URL",
                                   ref("responses", "/$defs/instance_created"),
                                   links=id_links("instance_id", "getInstance", "updateInstance", "deleteInstance",
                                                  "rotateInstanceSecret", "chatWithInstance"))},
                          401, 422, *BODY_ERRORS, *DB_ERRORS),
                body=json_body("instance_create"), security=ADMIN,
            ),
            "get": operation(
                "registry", "listInstances", "The registered instances, a page at a time", "",
                responses({200: ok("A page of instances", ref("responses", "/$defs/instance_list"))},
                          401, 422, *DB_ERRORS),
                parameters=page_parameters(), security=ADMIN,
            ),
        },
        "/api/instances/{instance_id}": {
            "parameters": [instance_id],
            "get": operation(
                "registry", "getInstance", "One instance", "",
                responses({200: ok("The instance", instance)}, 401, *DB_ERRORS, e404=unknown),
                security=ADMIN_OR_INSTANCE,
            ),
            "patch": operation(
                "registry", "updateInstance", "Change an instance",
                "`name`, `description`; for direct instances also `endpoint`, `api_key`, `model`.",
                responses({200: ok("The instance, changed", instance)}, 401, *BODY_ERRORS, *DB_ERRORS,
                          e404=unknown, e422="Invalid body (`error.param` names the field), or `endpoint` or "
                                             "`api_key` for a tunnel instance, or an empty `endpoint`"),
                body=json_body("instance_update"), security=ADMIN_OR_INSTANCE,
            ),
            "delete": operation(
                "registry", "deleteInstance", "Delete an instance", "Its tunnel is closed for good.",
                responses({204: ok("Deleted")}, 401, *DB_ERRORS, e404=unknown), security=ADMIN_OR_INSTANCE,
            ),
        },
        "/api/instances/{instance_id}/secret": {
            "parameters": [instance_id],
            "post": operation(
                "registry", "rotateInstanceSecret", "A new instance secret",
                "The old secret stops working and the instance's tunnel is closed.",
                responses({200: ok("The new secret", ref("responses", "/$defs/instance_secret"))},
                          401, *DB_ERRORS, e404=unknown),
                security=ADMIN,
            ),
        },
        "/api/instances/{instance_id}/connect": {
            "parameters": [instance_id],
            "get": operation(
                "registry", "connectTunnel", "The tunnel's WebSocket",
                "A WebSocket (RFC 6455) upgrade request from the instance's connector (`flask --app app connect`), "
                "with the instance's secret. Once upgraded, the tunnel protocol (version 1) runs over it: see "
                "docs/registry.md. A request without the upgrade gets 400 `websocket_required`.",
                responses(
                    {101: {"description": "Switching Protocols: the tunnel is open",
                           "headers": {"Upgrade": {"schema": {"const": "websocket"}},
                                       "Sec-WebSocket-Accept": {"schema": {"type": "string"}}}}},
                    401, e400="Not a WebSocket upgrade request (`websocket_required`)", e404=unknown,
                    e409="A direct instance has no tunnel (`not_a_tunnel`)",
                    e503="Tunnels are off on this registry, or it is restarting (with `Retry-After`)",
                ),
                security=INSTANCE,
            ),
        },
        "/api/chat/{instance_id}": {"parameters": [instance_id], "post": chat},
        "/api/chat/{instance_id}/chat/completions": {
            "parameters": [instance_id],
            "post": {**chat, "operationId": "chatWithInstanceOpenAI",
                     "summary": "Chat with a registered instance (OpenAI SDK path)"},
        },
    }


def _other_paths():
    return {
        "/healthz": {
            "get": operation("health", "healthz", "Liveness", "The process is up; the backend is not consulted.",
                             responses({200: ok("Up", ref("responses", "/$defs/health"))})),
        },
        "/readyz": {
            "get": operation("health", "readyz", "Readiness", "The backend can serve now.",
                             responses({200: ok("Ready", ref("responses", "/$defs/ready"))}, 502, 503, 504)),
        },
        "/": {
            "get": operation(
                "web", "webPage", "The web page", "The chat and management page (`no-cache`, with an ETag).",
                responses({200: ok("The page", {"type": "string"}, "text/html"),
                           304: ok("Not modified (`If-None-Match`)")}),
            ),
        },
        "/assets/{version}/{filename}": {
            "parameters": [path_parameter("version", "The hash of the page's files; the current one is cached "
                                                     "for a year"),
                           path_parameter("filename", "A file of the page (scripts, styles, images)")],
            "get": operation(
                "web", "webAsset", "A file of the web page", "",
                responses({200: ok("The file", {}, "*/*"), 304: ok("Not modified (`If-None-Match`)")},
                          e404="No such file"),
            ),
        },
        "/metrics": {
            "get": operation(
                "meta", "metrics", "Prometheus metrics",
                "Requests, latency, time to first chunk, tokens, chats in flight, backend errors, the local model's "
                "queue and the registry, summed over every worker. Open to `KERNEL_METRICS_ALLOW` (loopback by "
                "default).",
                responses({200: ok("The metrics", {"type": "string"}, "text/plain")},
                          e403="Not open to this address (`KERNEL_METRICS_ALLOW`)"),
            ),
        },
        "/openapi.json": {
            "get": operation(
                "meta", "openapi", "This document", "OpenAPI 3.1, built from `schemas/` when the server starts.",
                responses({200: ok("The document", {"type": "object", "required": ["openapi", "info", "paths"]})}),
            ),
        },
    }


def build_document():
    """The whole OpenAPI document, as a dict."""
    paths = {}
    for part in (_chat_paths(), _roles_paths(), _documents_paths(), _registry_paths(), _other_paths()):
        paths.update(part)
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": "Kernel Chat",
            "version": __version__,
            "summary": "A self-hostable, OpenAI-compatible chat server for a personal AI instance",
            "description": "Every error is the envelope of `#/components/schemas/error`; its `code` is the HTTP "
                           "status. Every response carries `X-Request-ID`. Wire format: docs/protocol.md.",
        },
        "tags": [{"name": name} for name in ("chat", "roles", "documents", "registry", "health", "web", "meta")],
        "paths": paths,
        "components": {
            "schemas": component_schemas(),
            "securitySchemes": {
                "adminKey": {"type": "http", "scheme": "bearer",
                             "description": "The admin key: `KERNEL_ADMIN_KEY`, or `<KERNEL_DATA_DIR>/admin.key`"},
                "chatKey": {"type": "http", "scheme": "bearer",
                            "description": "A chat key from `KERNEL_CHAT_KEYS`: needed on chat routes when any is set"},
                "instanceSecret": {"type": "http", "scheme": "bearer",
                                   "description": "A registered instance's own secret (`kis_…`), shown once when "
                                                  "it is registered or rotated; it grants access to that instance"},
            },
            "headers": {
                "RequestId": {"required": True, "description": "The request's id: the client's own, if sensible",
                              "schema": {"type": "string", "minLength": 1, "maxLength": 128}},
                "RetryAfter": {"description": "Seconds to wait (or an upstream's own value, passed on)",
                               "schema": {"type": "string"}},
            },
        },
    }


@bp.get("/openapi.json")
def openapi_document():
    return Response(current_app.extensions["kernel.openapi"], mimetype=JSON)


def init_app(app):
    app.extensions["kernel.openapi"] = json.dumps(build_document(), ensure_ascii=False).encode()
    app.register_blueprint(bp)
