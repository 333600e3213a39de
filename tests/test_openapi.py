"""``GET /openapi.json``: every route documented, from the same ``schemas/`` the validator uses; and the
running server fuzzed against it with schemathesis: no 5xx, every error in the envelope, every response
as documented."""

import itertools
import json
import re
import secrets
import time
import zlib
from pathlib import Path

import pytest
import requests
import schemathesis
from jsonschema import Draft202012Validator, ValidationError

from kernel.openapi import build_document, component_schemas
from kernel.schema import SCHEMA_DIR

UNDOCUMENTED_METHODS = {"HEAD", "OPTIONS"}  # answered by Flask for every route


def undocumented_routes(app, document):
    """``METHOD /path`` of each route of ``app`` that ``document`` does not describe."""
    missing = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" and not (app.static_folder and Path(app.static_folder).is_dir()):
            continue  # Flask's own /static route, with no folder behind it: it answers nothing but 404
        path = rule.rule
        for argument in rule.arguments:
            for converter in ("", "path:", "int:", "string:", "uuid:"):
                path = path.replace(f"<{converter}{argument}>", "{" + argument + "}")
        for method in sorted(rule.methods - UNDOCUMENTED_METHODS):
            if method.lower() not in document["paths"].get(path, {}):
                missing.append(f"{method} {path}")
    return missing


@pytest.fixture
def document(client):
    response = client.get("/openapi.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    return response.get_json()


def test_every_route_is_documented(app, document):
    assert undocumented_routes(app, document) == []


def test_a_new_route_would_be_noticed(app):
    document = build_document()
    app.add_url_rule("/api/kernel2/new/<item_id>", "new", lambda item_id: "", methods=["PUT"])
    assert undocumented_routes(app, document) == ["PUT /api/kernel2/new/{item_id}"]


def test_nothing_documented_is_missing_from_the_app(app, document):
    routes = {(rule.rule, method.lower()) for rule in app.url_map.iter_rules() for method in rule.methods}
    for path, item in document["paths"].items():
        flask_path = path.replace("{filename}", "<path:filename>").replace("{", "<").replace("}", ">")
        for method in item.keys() - {"parameters"}:
            assert (flask_path, method) in routes, f"{method.upper()} {path} is documented but not served"


def test_the_document_is_valid_openapi_3_1(document):
    assert document["openapi"].startswith("3.1")
    schemathesis.openapi.from_dict(document).validate()  # against the OpenAPI 3.1 meta-schema; raises if not


def test_schemas_are_the_validators_own(document):
    components = document["components"]["schemas"]
    assert set(components) == {path.stem for path in SCHEMA_DIR.glob("*.json")}
    raw = json.loads((SCHEMA_DIR / "chat_request.json").read_text())
    assert components["chat_request"]["properties"]["temperature"] == raw["properties"]["temperature"]
    assert components["chat_request"]["properties"]["messages"]["items"] == {
        "$ref": "#/components/schemas/chat_request/$defs/message"
    }
    assert components["instance_create"]["properties"]["name"] == {"$ref": "#/components/schemas/instance/$defs/name"}
    assert components["registry_chat_request"]["allOf"] == [{"$ref": "#/components/schemas/chat_request"}]
    body = document["paths"]["/api/kernel2/chat"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/chat_request"}


def test_component_schemas_rewrite_every_reference(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({
        "$schema": "https://json-schema.org/draft/2020-12/schema", "$id": "a.json",
        "properties": {"x": {"$ref": "#/$defs/x"}, "y": {"$ref": "b.json#/$defs/y"}, "z": {"$ref": "b.json"}},
        "$defs": {"x": {"type": "string"}},
    }))
    (tmp_path / "b.json").write_text(json.dumps({"$id": "b.json", "$defs": {"y": {"type": "integer"}}}))
    components = component_schemas(tmp_path)
    assert components["a"] == {
        "properties": {"x": {"$ref": "#/components/schemas/a/$defs/x"},
                       "y": {"$ref": "#/components/schemas/b/$defs/y"},
                       "z": {"$ref": "#/components/schemas/b"}},
        "$defs": {"x": {"type": "string"}},
    }


def test_every_reference_resolves(document):
    def pointers(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "$ref":
                    yield value
                else:
                    yield from pointers(value)
        elif isinstance(node, list):
            for item in node:
                yield from pointers(item)

    for pointer in set(pointers(document)):
        assert pointer.startswith("#/"), pointer
        target = document
        for part in pointer[2:].split("/"):
            assert part in target, f"{pointer} does not resolve"
            target = target[part]


def test_errors_and_streams_are_documented(document):
    paths = document["paths"]
    for path, item in paths.items():
        for method, op in item.items():
            if method == "parameters":
                continue
            for status, response in op["responses"].items():
                if status == "101":  # the WebSocket handshake, written by kernel/registry/ws.py
                    continue
                assert "X-Request-ID" in response.get("headers", {}), f"{method} {path} {status}"
                if status.startswith(("4", "5")):
                    schema = response["content"]["application/json"]["schema"]
                    assert schema["allOf"][0] == {"$ref": "#/components/schemas/error"}
                    assert schema["allOf"][1] == {"properties": {"code": {"const": int(status)}}}
    for path in ("/api/kernel2/chat", "/v1/chat/completions", "/api/chat/{instance_id}"):
        assert "text/event-stream" in paths[path]["post"]["responses"]["200"]["content"]
    documents = paths["/api/kernel2/documents"]["post"]["requestBody"]["content"]
    assert set(documents) == {"application/json", "multipart/form-data"}
    assert paths["/api/kernel2/roles"]["post"]["security"] == [{"adminKey": []}]
    assert "101" in paths["/api/instances/{instance_id}/connect"]["get"]["responses"]
    for scheme in document["components"]["securitySchemes"].values():
        assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")


def test_the_error_envelope_schema_matches_errors(client, admin):
    envelope = Draft202012Validator(json.loads((SCHEMA_DIR / "error.json").read_text()))
    answers = [
        client.get("/nowhere"),
        client.get("/api/kernel2/roles"),
        client.post("/v1/chat/completions", json={"messages": []}),
        client.delete("/healthz"),
        client.get("/api/kernel2/roles/nope", headers=admin),
    ]
    for response in answers:
        assert response.status_code >= 400
        envelope.validate(response.get_json())
    with pytest.raises(ValidationError):
        envelope.validate({"success": False, "message": "x", "code": 400})  # no OpenAI error object


# -- what schemathesis found ------------------------------------------------------------------------------------

TRICKY = ["x", "", " ", "\n", "x\n", "\nx", "a b", "\x00", "\x1c", "\x1d", "\x1f", "\x7f", "\x85", "\xa0", "\u2028",
          "\ufeff", "\u200b", "é", "Ā", "http://a/v1", "http://a/v1\n", "https://a/b\x1dc", "https://\xedi/v1",
          "sk-1/+="]


def patterns(node):
    if isinstance(node, dict):
        if isinstance(node.get("pattern"), str):
            yield node["pattern"]
        for value in node.values():
            yield from patterns(value)
    elif isinstance(node, list):
        for item in node:
            yield from patterns(item)


def test_patterns_mean_the_same_to_the_server_and_to_json_schema_tools():
    """The server matches patterns with Python's re; JSON Schema tools (schemathesis, browsers, most other
    languages) with ECMA-262 regexes. Where they differ (whitespace, ``$`` before a final newline), a client
    would be refused what the published schema allows, or the server would store what it should refuse."""
    import jsonschema_rs

    found = {pattern for path in SCHEMA_DIR.glob("*.json") for pattern in patterns(json.loads(path.read_text()))}
    assert len(found) >= 5
    for pattern in found:
        for text in TRICKY:
            assert bool(re.search(pattern, text)) == jsonschema_rs.is_valid({"pattern": pattern}, text), (pattern, text)


@pytest.mark.parametrize("body, param", [
    ({"name": "x", "endpoint": "http://a/v1", "api_key": "sk-\u0100"}, "api_key"),  # not a header value
    ({"name": "x", "endpoint": "http://a/v1", "api_key": "sk-1\n"}, "api_key"),
    ({"name": "x", "endpoint": "http://a/v1\n"}, "endpoint"),
    ({"name": "x", "endpoint": "https://a\x00b/v1"}, "endpoint"),
    ({"name": "\x1d"}, "name"),
    ({"name": "x", "api_key": "k"}, "api_key"),  # only a direct instance has one; now said by the schema
])
def test_instances_refuse_what_cannot_be_sent(client, admin, body, param):
    response = client.post("/api/instances", json=body, headers=admin)
    assert response.status_code == 422 and response.get_json()["error"]["param"] == param


@pytest.mark.parametrize("url, status", [("/api/kernel2/documents", 400), ("/api/instances", 422)])
def test_an_offset_past_sqlite_integers_is_refused(client, admin, url, status):
    response = client.get(f"{url}?offset=11126473896864870400", headers=admin)  # was a 500 (OverflowError)
    assert response.status_code == status and response.get_json()["error"]["param"] == "offset"
    assert client.get(f"{url}?offset=9223372036854775807", headers=admin).status_code == 200


def test_nan_is_not_json(client):
    body = '{"messages": [{"role": "user", "content": "hi"}], "top_p": NaN}'  # passed every range check
    response = client.post("/v1/chat/completions", data=body, content_type="application/json")
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "invalid_json"


def test_whole_numbers_reach_the_backend_as_integers(fuzzed_server, upstream):
    """``"max_tokens": 2.0`` is an integer to JSON Schema; the test upstream slices with it (a TypeError, so a
    503, before), llama.cpp would take ``"seed": 5.0`` to ctypes."""
    response = fuzzed_server.post("/v1/chat/completions", {"messages": [{"role": "user", "content": "a b c"}],
                                                           "max_tokens": 2.0, "seed": 5.0, "temperature": 0.5})
    assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"] == "a b"
    sent = upstream.stats.bodies[-1]
    assert type(sent["max_tokens"]) is int and type(sent["seed"]) is int and sent["temperature"] == 0.5


# -- schemathesis against the real server --------------------------------------------------------------------
#
# The document is the one the server serves (test_the_server_serves_this_document); it is loaded when the
# module is collected, so each operation is a test of its own, with EXAMPLES_PER_ROUTE generated requests,
# valid and invalid, from a fixed seed. The server is given the admin key (KERNEL_ADMIN_KEY; the schema's
# auth is set before the server exists), so every route with `security` is fuzzed past the 401, and
# schemathesis's `ignored_auth` check also tries each without it and with a wrong one. Checks: all of
# schemathesis's defaults (no 5xx; status, content type, headers and body as documented, SSE events
# included; valid requests accepted, invalid ones rejected), and no traceback in the server's log.

SEED = 20240612
EXAMPLES_PER_ROUTE = 25
ADMIN_KEY = "fuzz-" + secrets.token_urlsafe(16)

# Statuses that answer schema-valid requests, besides schemathesis's defaults, where the schema cannot tell:
# an upload is valid whatever its bytes, but only UTF-8 text that is not all whitespace is a document; and
# a tunnel instance has no endpoint or api_key to change.
UPLOADS = {"include-operation-id": "addDocument",
           "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", 400, 401, 403, 409, 415, 429]}}}
INSTANCE_MODES = {"include-operation-id": "updateInstance",
                  "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", 401, 403, 404, 422]}}}


def load_schema(*operations):
    return schemathesis.openapi.from_dict(
        build_document(),
        config=schemathesis.Config.from_dict({
            "seed": SEED,
            "generation": {"max-examples": EXAMPLES_PER_ROUTE, "deterministic": True, "database": "none"},
            "auth": {"openapi": {"adminKey": {"bearer": ADMIN_KEY}}},
            "request-timeout": 10,
            # The coverage phase would spend 15 s building its cases whenever this module is collected.
            "phases": {"coverage": {"enabled": False}},
            "operations": list(operations),
        }),
    )


schema = load_schema(UPLOADS, INSTANCE_MODES)


@pytest.fixture(scope="module")
def fuzzed_server(start_server, upstream):
    return start_server(KERNEL_BACKEND="openai", KERNEL_UPSTREAM_URL=upstream.url, KERNEL_SSE_PING_S=0.3,
                        KERNEL_UPSTREAM_TIMEOUT_S=5, KERNEL_PROBE_INTERVAL_S=60, KERNEL_ADMIN_KEY=ADMIN_KEY)


@pytest.fixture(scope="module")
def online_instance(fuzzed_server, upstream):
    """A direct instance relaying to the test upstream, online: the registry's chat routes are fuzzed with it
    (an unknown id is a 404 before the body is even read)."""
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    created = requests.post(fuzzed_server.url + "/api/instances", headers=admin, timeout=10,
                            json={"name": "fuzz target", "endpoint": upstream.url})
    assert created.status_code == 201, created.text
    url = f"{fuzzed_server.url}/api/instances/{created.json()['instance_id']}"
    deadline = time.monotonic() + 15
    while requests.get(url, headers=admin, timeout=10).json()["status"] != "online":
        assert time.monotonic() < deadline, "the registry did not find the test upstream online"
        time.sleep(0.1)
    return created.json()["instance_id"]


def test_the_server_serves_this_document(fuzzed_server):
    response = requests.get(fuzzed_server.url + "/openapi.json", timeout=10)
    assert response.status_code == 200 and response.headers["Content-Type"] == "application/json"
    assert response.json() == json.loads(json.dumps(schema.raw_schema))


TRACEBACK = "Traceback (most recent call last):"


def unexpected_tracebacks(log):
    """Every traceback in a server log: an expected error (a 404, a 409) prints none."""
    return [TRACEBACK + block[:3000] for block in log.split(TRACEBACK)[1:]]


REGISTRY_CHAT = {"POST /api/chat/{instance_id}", "POST /api/chat/{instance_id}/chat/completions"}
NAMES = itertools.count()


def create(server, upstream, parameter, choice):
    """A new role, document or instance, for the path parameter ``parameter``; its id."""
    n = next(NAMES)
    collection, body = {
        "role_id": ("/api/kernel2/roles", {"name": f"fuzz role {n}", "system_prompt": "You are a test."}),
        "document_id": ("/api/kernel2/documents", {"title": f"fuzz {n}", "content": f"Document number {n}."}),
        "instance_id": ("/api/instances", {"name": f"fuzz instance {n}", **({"endpoint": upstream.url} if choice & 2
                                                                             else {})}),
    }[parameter]
    response = requests.post(server.url + collection, json=body, headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                             timeout=10)
    assert response.status_code == 201, response.text
    return response.json()[parameter]


@schema.parametrize()
def test_fuzz(case, fuzzed_server, upstream, online_instance):
    """Each route with generated requests; ids in paths are, half the time, of things that exist."""
    for name, value in list((case.path_parameters or {}).items()):
        if case.operation.label in REGISTRY_CHAT:  # an unknown id is a 404 before the body is read
            case.path_parameters[name] = online_instance
        elif name.endswith("_id"):
            choice = zlib.crc32(str(value).encode())  # deterministic, as the generated value is
            if choice & 1:
                case.path_parameters[name] = create(fuzzed_server, upstream, name, choice)
    start = len(fuzzed_server.log())
    case.call_and_validate(base_url=fuzzed_server.url)
    assert unexpected_tracebacks(fuzzed_server.log()[start:]) == []
