import jsonschema_rs
import pytest

from kernel.errors import ApiError
from kernel.schema import SCHEMA_DIR, field_path, validate, validator

USER = {"role": "user", "content": "hi"}


def body(**fields):
    return {"messages": [USER], **fields}


ACCEPTED = [
    body(),
    body(metadata={"enable_l0_retrieval": True, "role_id": "0b7c1d1e-0000-4000-8000-000000000000"}),
    body(stream=False, model="gpt-3.5-turbo", temperature=0.1, max_tokens=2000),
    body(temperature=0, top_p=1, presence_penalty=-2, frequency_penalty=2, seed=-5, user="me"),
    body(stop="END"),
    body(stop=["a", "b", "c", "d"]),
    body(stop=None, temperature=None, max_tokens=None, stream_options=None),
    body(stream_options={"include_usage": True}, max_completion_tokens=5, n=1),
    body(tools=[{"type": "function"}], response_format={"type": "text"}),  # unknown fields are ignored
    {"messages": [{"role": "system", "content": "s"}, USER, {"role": "assistant", "content": "a"}]},
    {"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]},
    {"messages": [{"role": "user", "content": "", "name": "alice"}]},
    body(seed=2**70, user="lone \ud800 surrogate", metadata={"tags": [1.5, None, {"deep": [True]}]}),
]


@pytest.mark.parametrize("instance", ACCEPTED)
def test_accepts(instance):
    validate("chat_request", instance)


REJECTED = [
    ({}, "messages", "'messages' is required"),
    ([], None, "is not of type 'object'"),
    ({"messages": []}, "messages", "should be non-empty"),
    ({"messages": "hi"}, "messages", "is not of type 'array'"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role", "'robot' is not one of"),
    ({"messages": [{"role": "user"}]}, "messages[0].content", "'content' is required"),
    ({"messages": [{"content": "x"}]}, "messages[0].role", "'role' is required"),
    ({"messages": [USER, {"role": "user", "content": 5}]}, "messages[1].content", "expected string or array"),
    (
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
        "messages[0].content[0].type",
        "content part type 'image_url' is not supported",
    ),
    ({"messages": [{"role": "user", "content": [{"type": "text"}]}]}, "messages[0].content[0].text", "required"),
    (body(temperature=2.5), "temperature", "greater than the maximum of 2"),
    (body(temperature="hot"), "temperature", "is not of type"),
    (body(top_p=1.5), "top_p", "maximum of 1"),
    (body(max_tokens=0), "max_tokens", "less than the minimum of 1"),
    (body(max_tokens=1.5), "max_tokens", "is not of type"),
    (body(max_completion_tokens=0), "max_completion_tokens", "minimum of 1"),
    (body(presence_penalty=-3), "presence_penalty", "minimum of -2"),
    (body(stop=["a", "b", "c", "d", "e"]), "stop", "is too long"),
    (body(stop=5), "stop", "expected null or string or array"),
    (body(stream="yes"), "stream", "is not of type 'boolean'"),
    (body(n=2), "n", "maximum of 1"),
    (body(metadata={"enable_l0_retrieval": "yes"}), "metadata.enable_l0_retrieval", "'boolean'"),
    (body(metadata={"role_id": 7}), "metadata.role_id", "'string'"),
    (body(metadata=[]), "metadata", "'object'"),
    (body(stream_options={"include_usage": 1}), "stream_options.include_usage", "'boolean'"),
]


@pytest.mark.parametrize("instance, param, words", REJECTED)
def test_rejects_naming_the_field(instance, param, words):
    with pytest.raises(ApiError) as info:
        validate("chat_request", instance)
    error = info.value
    assert error.status == 400
    assert error.param == param
    assert words in error.message
    if param:
        assert error.message.startswith(param + ": ")


@pytest.mark.parametrize(
    "parts, expected",
    [([], ""), (["messages", 0, "role"], "messages[0].role"), (["a", "b", 2, 3], "a.b[2][3]")],
)
def test_field_path(parts, expected):
    assert field_path(parts) == expected


@pytest.mark.parametrize("instance", ACCEPTED + [r[0] for r in REJECTED])
def test_both_validators_agree(instance):
    """jsonschema-rs decides; jsonschema explains. They must read the schema alike."""
    schema = validator("chat_request").schema
    assert jsonschema_rs.validator_for(schema).is_valid(instance) == validator("chat_request").is_valid(instance)


@pytest.mark.parametrize(
    "name, instance",
    [
        ("document_create", {"title": "notes", "content": "text"}),
        ("document_create", {"title": "   ", "content": "text"}),  # whitespace only
        ("document_create", {"title": "\u0085\ufeff\u001c", "content": "text"}),
        ("document_create", {"title": "t", "content": "\n\t\u2028"}),
        ("document_create", {"title": "t\n", "content": "x"}),
        ("role_create", {"name": "r", "system_prompt": "be brief"}),
        ("role_create", {"name": " ", "system_prompt": "be brief"}),
        ("instance_create", {"name": "me", "endpoint": "http://127.0.0.1:8002/v1"}),
        ("instance_create", {"name": "me", "endpoint": "http://127.0.0.1:8002/v1\n"}),  # a trailing newline
        ("instance_create", {"name": "me", "endpoint": "https://h\u00a0/v1"}),
        ("instance_create", {"name": "me", "endpoint": "ftp://h/v1"}),
        ("instance_create", {"name": "me", "endpoint": "http://h", "api_key": "sk-ok"}),
        ("instance_create", {"name": "me", "endpoint": "http://h", "api_key": "sk key"}),
        ("instance_create", {"name": "me", "endpoint": "http://h", "api_key": "sk-key\n"}),
        ("instance_create", {"name": "me", "api_key": "sk-ok"}),  # an api_key needs an endpoint
    ],
)
def test_both_validators_agree_on_the_other_schemas(name, instance):
    """Patterns with \\s and (?!\\n)$ are where Python's and Rust's regular expressions could differ."""
    assert jsonschema_rs.validator_for(validator(name).schema).is_valid(instance) == validator(name).is_valid(instance)


@pytest.mark.parametrize("path", sorted(SCHEMA_DIR.glob("*.json")), ids=lambda p: p.stem)
def test_every_schema_compiles_for_both_validators(path):
    jsonschema_rs.validator_for(validator(path.stem).schema)


def test_schema_is_compiled_once():
    assert validator("chat_request") is validator("chat_request")
