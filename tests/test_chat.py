import json

import pytest

from kernel import chat, sse
from kernel.backends import Backend, UpstreamError
from kernel.backends.echo import EchoBackend
from kernel.config import from_environ


def parse(raw):
    """The events of an SSE body: parsed JSON, '[DONE]', or ':ping' for comments."""
    events = []
    for block in raw.decode().split("\n\n"):
        if block.startswith("data: "):
            payload = block[6:]
            events.append(payload if payload == "[DONE]" else json.loads(payload))
        elif block.startswith(":"):
            events.append(":ping")
    return events


@pytest.mark.parametrize(
    "body, expected",
    [
        ({}, {"temperature": 0.1, "max_tokens": 2000, "stop": [], "model": "", "top_p": None}),
        ({"max_tokens": 5}, {"max_tokens": 5}),
        ({"max_tokens": 5, "max_completion_tokens": 9}, {"max_tokens": 9}),
        ({"max_tokens": None}, {"max_tokens": 2000}),
        ({"temperature": 0}, {"temperature": 0}),
        ({"temperature": None}, {"temperature": 0.1}),
        ({"stop": "END"}, {"stop": ["END"]}),
        ({"stop": ["a", "b"]}, {"stop": ["a", "b"]}),
        ({"model": "m", "seed": 3, "user": "u"}, {"model": "m", "seed": 3, "user": "u"}),
    ],
)
def test_build_request(body, expected):
    request = chat.build_request({"messages": [{"role": "user", "content": "hi"}], **body})
    for name, value in expected.items():
        assert getattr(request, name) == value


def test_build_request_flattens_text_parts_and_keeps_names():
    body = {
        "messages": [
            {"role": "system", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            {"role": "user", "content": "c", "name": "ann"},
        ]
    }
    assert chat.build_request(body).messages == [
        {"role": "system", "content": "ab"},
        {"role": "user", "content": "c", "name": "ann"},
    ]


def test_completion_chunks_are_exact_bytes():
    completion = chat.Completion("m", "fp_x")
    completion.id, completion.created = "chatcmpl-1", 7
    head = '{"id":"chatcmpl-1","object":"chat.completion.chunk","created":7,"model":"m","system_fingerprint":"fp_x",'
    assert completion.chunk({"role": "assistant", "content": ""}) == (
        "data: " + head + '"choices":[{"index":0,"delta":{"role":"assistant","content":""},'
        '"logprobs":null,"finish_reason":null}]}\n\n'
    ).encode()
    assert completion.usage_chunk({"prompt_tokens": 1}) == (
        "data: " + head + '"choices":[],"usage":{"prompt_tokens":1}}\n\n'
    ).encode()


@pytest.mark.parametrize("text", ["plain", 'quote " and \\ slash', "new\nline", "ünïcødé ✓ 🙂", ""])
def test_content_chunk_matches_the_general_encoder(text):
    completion = chat.Completion("m", "fp_x")
    expected = completion.chunk({"content": text})
    assert completion.content(text) == expected
    assert json.loads(expected[6:])["choices"][0]["delta"]["content"] == text


def test_whole_completion():
    completion = chat.Completion("m", "fp_x")
    result = chat.Result(finish_reason="length")
    result.set_usage(3, 4)
    body = completion.whole("hi", result)
    assert body["object"] == "chat.completion"
    assert body["choices"] == [
        {"index": 0, "message": {"role": "assistant", "content": "hi"}, "logprobs": None, "finish_reason": "length"}
    ]
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


def echo_generation(text="one two three", **fields):
    backend = EchoBackend(from_environ({}))
    return chat.Generation(backend, chat.build_request({"messages": [{"role": "user", "content": text}], **fields}))


def test_events_with_usage():
    generation = echo_generation()
    events = parse(b"".join(generation.events(generation.first(1), include_usage=True, ping_s=1)))
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in events[1:-2]) == "one two three"
    assert events[-3]["choices"][0]["finish_reason"] == "stop"
    assert events[-2]["choices"] == [] and events[-2]["usage"]["completion_tokens"] == 3
    assert events[-1] == "[DONE]"
    assert len({e["id"] for e in events[:-1]}) == 1


class Scripted(Backend):
    """Yields its script; a float is a pause, an exception is raised."""

    name = "scripted"

    def __init__(self, script):
        super().__init__({})
        self.script = script

    def generate(self, request, result):
        import gevent

        for step in self.script:
            if isinstance(step, float):
                gevent.sleep(step)
            elif isinstance(step, Exception):
                raise step
            else:
                yield step


def scripted(script):
    return chat.Generation(Scripted(script), chat.build_request({"messages": [{"role": "user", "content": "x"}]}))


def test_pings_while_the_backend_is_silent():
    generation = scripted(["a", 0.35, "b"])
    events = parse(b"".join(generation.events(generation.first(0.1), include_usage=False, ping_s=0.1)))
    assert events.count(":ping") >= 2
    assert [e for e in events if e == ":ping" or e == "[DONE]"][-1] == "[DONE]"


def test_an_error_after_the_start_is_one_event_then_done():
    generation = scripted(["a", UpstreamError("upstream broke")])
    first = generation.first(1)
    events = parse(b"".join(generation.events(first, include_usage=True, ping_s=1)))
    assert events[-1] == "[DONE]"
    assert events[-2] == {
        "success": False,
        "message": "upstream broke",
        "code": 502,
        "error": {"message": "upstream broke", "type": "server_error", "param": None, "code": "upstream_error"},
    }
    assert events[1]["choices"][0]["delta"]["content"] == "a"


def test_our_own_bug_mid_stream_hides_its_details():
    generation = scripted(["a", 0.05, KeyError("secret internals")])
    events = parse(b"".join(generation.events(generation.first(1), include_usage=False, ping_s=1)))
    assert events[-2]["code"] == 500
    assert "secret" not in json.dumps(events[-2])


def test_an_error_before_the_first_delta_is_raised_for_a_status():
    generation = scripted([UpstreamError("refused")])
    with pytest.raises(UpstreamError):
        generation.first(1)


def test_a_departed_client_stops_the_wait(monkeypatch):
    monkeypatch.setattr(chat, "PROBE_INTERVAL_S", 0.05)
    generation = chat.Generation(
        Scripted([5.0, "never"]),
        chat.build_request({"messages": [{"role": "user", "content": "x"}]}),
        client_gone=lambda: True,
    )
    with pytest.raises(chat.ClientGone):
        generation.first(None)
    assert generation.relay._greenlet.dead


def test_the_sse_constants_end_the_stream():
    generation = echo_generation()
    body = b"".join(generation.events(generation.first(1), include_usage=False, ping_s=1))
    assert body.endswith(sse.DONE)


# -- roles and knowledge in the prompt ---------------------------------------------------------------


@pytest.fixture
def db(tmp_path):
    from kernel import store

    conn = store.connect(str(tmp_path / "k.db"))
    store.migrate(conn)
    yield conn
    conn.close()


@pytest.fixture
def alice(db):
    from kernel.store import knowledge, roles

    knowledge.add(db, "Garden diary", "The tomatoes in the north bed were planted on 3 May.")
    knowledge.add(db, "Recipes", "Bake the bread at 220 degrees for 30 minutes.")
    return roles.create(db, "Alice", "You are Alice.")


CLIENT = [
    {"role": "system", "content": "Client system."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello"},
    {"role": "user", "content": "When were the tomatoes planted?"},
]


def compose(db, metadata, messages=CLIENT):
    return chat.compose([dict(m) for m in messages], metadata, lambda: db, 3).messages


def test_no_metadata_leaves_messages_alone_and_opens_no_database():
    def no_db():
        raise AssertionError("the store was opened")

    assert chat.compose(list(CLIENT), {}, no_db, 3) == (CLIENT, [])
    assert chat.compose(list(CLIENT), {"enable_l0_retrieval": False}, no_db, 3) == (CLIENT, [])


def test_role_replaces_the_client_system_message(db, alice):
    messages = compose(db, {"role_id": alice["role_id"]})
    assert messages == [{"role": "system", "content": "You are Alice."}] + CLIENT[1:]


def test_retrieval_adds_a_reference_section_to_the_system_message(db, alice):
    messages = compose(db, {"enable_l0_retrieval": True})
    system = messages[0]["content"]
    assert [m["role"] for m in messages].count("system") == 1
    assert system.startswith("Client system.\n\n<reference_knowledge>\n")
    assert '[1] From "Garden diary":\nThe tomatoes in the north bed were planted on 3 May.' in system
    assert system.endswith("</reference_knowledge>")
    assert "bread" not in system
    assert messages[1:] == CLIENT[1:]


def test_role_and_retrieval_together(db, alice):
    messages = compose(db, {"role_id": alice["role_id"], "enable_l0_retrieval": True})
    assert messages[0]["content"].startswith("You are Alice.\n\n<reference_knowledge>")
    assert "Client system." not in messages[0]["content"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]


def test_roles_default_retrieval_applies_unless_the_request_says_otherwise(db, alice):
    from kernel.store import roles

    roles.update(db, alice["role_id"], enable_l0_retrieval=True)
    assert "<reference_knowledge>" in compose(db, {"role_id": alice["role_id"]})[0]["content"]
    explicit_off = compose(db, {"role_id": alice["role_id"], "enable_l0_retrieval": False})
    assert explicit_off[0]["content"] == "You are Alice."


def test_nothing_relevant_means_no_section(db, alice):
    messages = compose(db, {"enable_l0_retrieval": True}, CLIENT[:3] + [{"role": "user", "content": "🙂 ok?"}])
    assert messages == CLIENT[:3] + [{"role": "user", "content": "🙂 ok?"}]


def test_retrieval_without_a_client_system_message(db, alice):
    messages = compose(db, {"enable_l0_retrieval": True}, CLIENT[1:])
    assert messages[0]["role"] == "system" and messages[0]["content"].startswith("<reference_knowledge>")
    assert messages[1:] == CLIENT[1:]


@pytest.mark.parametrize("role_id", ["nope", "00000000-0000-4000-8000-000000000000"])
def test_unknown_role_is_a_404_naming_the_field(db, role_id):
    from kernel.errors import ApiError

    with pytest.raises(ApiError) as info:
        compose(db, {"role_id": role_id})
    assert (info.value.status, info.value.param, info.value.code) == (404, "metadata.role_id", "role_not_found")


def test_default_role_without_a_marked_role_leaves_the_client_messages(db, alice):
    assert compose(db, {"role_id": "default_role"}) == CLIENT


def test_default_role_names_the_marked_role(db, alice):
    from kernel.store import roles

    roles.update(db, alice["role_id"], is_default=True)
    assert compose(db, {"role_id": "default_role"}) == [{"role": "system", "content": "You are Alice."}] + CLIENT[1:]
    bob = roles.create(db, "Bob", "You are Bob.", is_default=True)
    assert compose(db, {"role_id": "default_role"})[0]["content"] == "You are Bob."
    assert not roles.get(db, alice["role_id"])["is_default"]
    roles.update(db, bob["role_id"], is_default=False)
    assert compose(db, {"role_id": "default_role"}) == CLIENT


def test_retrieval_names_its_sources_once_each(db, alice):
    composed = chat.compose(list(CLIENT), {"enable_l0_retrieval": True}, lambda: db, 3)
    assert [s["title"] for s in composed.sources] == ["Garden diary"]
    assert set(composed.sources[0]) == {"document_id", "title"}
