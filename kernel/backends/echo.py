"""``echo``: answers with the last user message, word by word. Deterministic and offline; for tests and demos.

A "token" here is a whitespace-delimited word, so ``max_tokens`` and usage are counted in words.
"""

import re

from .base import Backend

_WORD = re.compile(r"\s*\S+")


def _words(text):
    return _WORD.findall(text)


class EchoBackend(Backend):
    name = "echo"

    def models(self):
        return ["echo"]

    def model_for(self, requested):
        return "echo"

    def generate(self, request, result):
        last_user = next((m["content"] for m in reversed(request.messages) if m["role"] == "user"), "")
        words = _words(last_user)
        if words:
            words[0] = words[0].lstrip()
        prompt_tokens = sum(len(_words(m["content"])) for m in request.messages)
        sent = 0
        result.finish_reason = "stop"
        for word in words:
            if sent == request.max_tokens:
                result.finish_reason = "length"
                break
            sent += 1
            result.set_usage(prompt_tokens, sent)
            yield word
        result.set_usage(prompt_tokens, sent)
