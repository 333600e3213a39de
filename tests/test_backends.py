import socket
import time

import pytest

from kernel import backends
from kernel.backends import (
    BackendNotFound,
    BackendTimeout,
    BackendUnavailable,
    ChatRequest,
    RateLimited,
    RejectedRequest,
    Result,
    UpstreamError,
)
from kernel.backends.echo import EchoBackend
from kernel.backends.openai import OpenAIBackend
from kernel.config import from_environ


def config(**overrides):
    return {**from_environ({}), **overrides}


def request(text="hello there big world", **fields):
    return ChatRequest(messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": text}], **fields)


def run(backend, req):
    result = Result()
    return list(backend.generate(req, result)), result


class Custom(backends.Backend):
    name = "custom"


# -- loading -----------------------------------------------------------------------------------------


def test_builtins_are_registered_as_entry_points_too():
    """setup.cfg registers the built-ins the way a third-party package would; the table finds them without
    installed metadata. The two must name the same factories."""
    import configparser

    from tests.conftest import ROOT

    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    lines = parser["options.entry_points"]["kernel.backends"].strip().splitlines()
    registered = dict(line.replace(" ", "").split("=", 1) for line in lines)
    assert registered == backends.BUILTINS
    assert set(backends.BUILTINS) <= set(backends.available())


@pytest.mark.parametrize(
    "settings, expected",
    [
        ({"KERNEL_BACKEND": "echo"}, EchoBackend),
        ({"KERNEL_BACKEND": "openai", "KERNEL_UPSTREAM_URL": "http://127.0.0.1:9/v1"}, OpenAIBackend),
        ({"KERNEL_BACKEND": "auto", "KERNEL_UPSTREAM_URL": "http://127.0.0.1:9/v1"}, OpenAIBackend),
        ({"KERNEL_BACKEND": "tests.test_backends:Custom"}, Custom),
    ],
)
def test_load(settings, expected):
    assert type(backends.load(config(**settings))) is expected


def test_auto_without_an_upstream_runs_the_local_model():
    from kernel.backends.local import LocalBackend

    assert type(backends.load(config(KERNEL_BACKEND="auto"))) is LocalBackend


def test_auto_with_nothing_installed_refuses_naming_both_fixes(monkeypatch):
    monkeypatch.setattr("kernel.backends.local.available", lambda config: False)
    with pytest.raises(BackendNotFound) as info:
        backends.load(config(KERNEL_BACKEND="auto"))
    assert "KERNEL_UPSTREAM_URL" in str(info.value) and "requirements-local.txt" in str(info.value)


def test_echo_is_never_chosen_by_auto(monkeypatch):
    monkeypatch.setattr("kernel.backends.local.available", lambda config: False)
    with pytest.raises(BackendNotFound):
        backends.resolve_name(config(KERNEL_BACKEND="auto"))


@pytest.mark.parametrize("name", ["nope", "tests.test_backends:Missing", "no.such.module:factory"])
def test_load_unknown_names_what_is_available(name):
    with pytest.raises(BackendNotFound, match="echo, local, openai" if ":" not in name else "cannot load"):
        backends.load(config(KERNEL_BACKEND=name))


def test_openai_backend_needs_a_url():
    with pytest.raises(ValueError, match="KERNEL_UPSTREAM_URL"):
        OpenAIBackend(config())


# -- echo --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, max_tokens, deltas, finish",
    [
        ("hello there big world", 2000, ["hello", " there", " big", " world"], "stop"),
        ("  spaced\nout  ", 2000, ["spaced", "\nout"], "stop"),
        ("hello there big world", 2, ["hello", " there"], "length"),
        ("one", 1, ["one"], "stop"),
        ("", 10, [], "stop"),
    ],
)
def test_echo(text, max_tokens, deltas, finish):
    got, result = run(EchoBackend(config()), request(text, max_tokens=max_tokens))
    assert got == deltas
    assert result.finish_reason == finish
    assert result.usage == {
        "prompt_tokens": 2 + len(text.split()),
        "completion_tokens": len(deltas),
        "total_tokens": 2 + len(text.split()) + len(deltas),
    }


def test_echo_reports_its_own_model():
    assert EchoBackend(config()).model_for("gpt-4o") == "echo"


# -- openai, against the real test upstream ----------------------------------------------------------


@pytest.fixture
def openai_backend(upstream):
    backend = OpenAIBackend(config(KERNEL_UPSTREAM_URL=upstream.url + "/", KERNEL_UPSTREAM_TIMEOUT_S=1))
    yield backend
    backend.close()


def test_payload_forwards_only_what_was_set(openai_backend):
    assert openai_backend.payload(request(max_tokens=5)) == {
        "messages": request().messages,
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.1,
        "max_tokens": 5,
    }
    full = openai_backend.payload(request(model="m", stop=["x"], top_p=0.5, seed=1, user="u", presence_penalty=0))
    assert (full["model"], full["stop"], full["top_p"], full["seed"], full["user"]) == ("m", ["x"], 0.5, 1, "u")
    assert full["presence_penalty"] == 0


@pytest.mark.parametrize(
    "fields",
    [
        {"seed": 2**70},  # JSON has no integer limit; orjson stops at 64 bits
        {"user": "lone \ud800 surrogate"},  # a \\ud800 escape in the client's JSON
        {"metadata": {"tags": ["a", 1.5, None, True]}},
    ],
)
def test_payload_reaches_the_upstream_whatever_json_the_client_sent(openai_backend, upstream, fields):
    deltas, _ = run(openai_backend, request("one two", **fields))
    assert deltas == ["one", " two"]
    ((name, value),) = fields.items()
    assert upstream.stats.bodies[-1][name] == value


def test_payload_uses_the_configured_model(upstream):
    backend = OpenAIBackend(config(KERNEL_UPSTREAM_URL=upstream.url, KERNEL_UPSTREAM_MODEL="llama"))
    assert backend.payload(request())["model"] == "llama"
    assert backend.payload(request(model="other"))["model"] == "other"
    assert backend.models() == ["llama"]


def test_openai_streams_deltas_and_usage(openai_backend):
    deltas, result = run(openai_backend, request(max_tokens=3))
    assert deltas == ["hello", " there", " big"]
    assert result.finish_reason == "length"
    assert result.usage == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}


def test_openai_lists_upstream_models_and_is_ready(openai_backend):
    assert openai_backend.models() == ["upstream-model"]
    openai_backend.check_ready()


@pytest.mark.parametrize(
    "model, error, words",
    [
        ("error:500", UpstreamError, "upstream answered 500: upstream says 500"),
        ("error:401", UpstreamError, "KERNEL_UPSTREAM_API_KEY"),
        ("error:400", RejectedRequest, "upstream says 400"),
        ("error:422", RejectedRequest, "upstream says 422"),
        ("error:429", RateLimited, "rate limiting"),
        ("error:503", BackendUnavailable, "unavailable"),
        ("stall:3", BackendTimeout, "sent nothing for 1 s"),
        ("headstall:3", BackendTimeout, "sent nothing for 1 s"),
        ("midfail:2", UpstreamError, "closed the connection mid-stream"),
        ("errorevent", UpstreamError, "model crashed"),
        ("garbage", UpstreamError, "not JSON"),
        ("noend", UpstreamError, "before finishing"),
    ],
)
def test_openai_maps_failures(openai_backend, model, error, words):
    with pytest.raises(error, match=words) as info:
        run(openai_backend, request(model=model))
    if error is RateLimited or error is BackendUnavailable:
        assert info.value.retry_after == "1"


def test_openai_reads_a_close_delimited_body(openai_backend):
    assert run(openai_backend, request(model="plain:3"))[0] == ["p0 ", "p1 ", "p2 "]


def test_openai_reads_a_compressed_stream(openai_backend):
    """Nothing asks for compression, but a proxy in front of an upstream may compress anyway."""
    assert run(openai_backend, request(model="gzip:3"))[0] == ["z0 ", "z1 ", "z2 "]


def test_openai_accepts_python_json_extensions_in_events(openai_backend):
    """NaN and -Infinity are not JSON, but Python's json writes them (a logprob of -inf) and reads them back."""
    assert run(openai_backend, request(model="nonfinite"))[0] == ["odd "]


@pytest.mark.parametrize("model", ["", "gzip:2", "slow:3:0.01", "nonfinite"])
def test_openai_streams_one_after_another_on_one_connection(upstream, model):
    backend = OpenAIBackend(config(KERNEL_UPSTREAM_URL=upstream.url))
    before = upstream.stats.connections
    try:
        for _ in range(4):
            deltas, result = run(backend, request("a b", model=model))
            assert deltas and result.finish_reason
    finally:
        backend.close()
    assert upstream.stats.connections - before == 1


def test_openai_does_not_reuse_a_connection_the_upstream_closed(openai_backend):
    """An upstream may close an idle kept-alive connection at any time: the next request opens a new one."""
    assert run(openai_backend, request(model="hangup:2"))[0] == ["h0 ", "h1 "]
    time.sleep(0.1)  # the close has arrived
    for _ in range(3):
        assert run(openai_backend, request("still here"))[0] == ["still", " here"]


def test_openai_refused_connection_fails_fast():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    backend = OpenAIBackend(config(KERNEL_UPSTREAM_URL=f"http://127.0.0.1:{port}/v1"))
    started = time.monotonic()
    with pytest.raises(BackendUnavailable, match="Connection refused"):
        run(backend, request())
    with pytest.raises(BackendUnavailable):
        backend.check_ready()
    assert time.monotonic() - started < 1
