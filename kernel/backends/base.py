"""The backend contract.

A backend turns a validated :class:`ChatRequest` into an iterator of text deltas. What is known only at
the end (why generation stopped, how many tokens it used) goes out of band, on the :class:`Result` the
caller passes in, in the spirit of simonw/llm's ``response.set_usage()``. Backends know nothing of Flask
or of the HTTP request that reached us; they report trouble by raising a :class:`BackendError`.

A backend is built by a factory (usually its class) called with the app's config dict, once per worker
process. ``generate`` runs in a greenlet of its own: a backend that calls blocking C code must hand
that work to a real thread (see :mod:`kernel.backends.local`) so the worker keeps serving.
"""

from dataclasses import dataclass, field


@dataclass
class ChatRequest:
    """A chat request after validation: message contents are plain strings, defaults are filled in."""

    messages: list
    model: str = ""
    temperature: float = 0.1
    max_tokens: int = 2000
    top_p: float = None
    stop: list = field(default_factory=list)
    presence_penalty: float = None
    frequency_penalty: float = None
    seed: int = None
    user: str = None
    # Passed on to the backend untouched when set: a registry relays the client's metadata to the instance.
    metadata: dict = None


@dataclass
class Result:
    """Filled in by the backend while it generates; read by the caller once the iterator is exhausted."""

    finish_reason: str = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def set_usage(self, prompt_tokens, completion_tokens):
        self.prompt_tokens = int(prompt_tokens)
        self.completion_tokens = int(completion_tokens)

    @property
    def usage(self):
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


class Backend:
    """Base class for backends. Subclasses set ``name`` and implement :meth:`generate`."""

    name = "backend"

    def __init__(self, config):
        self.config = config

    def models(self):
        """The model ids this backend serves; the first is the default."""
        return [self.name]

    def model_for(self, requested):
        """The model id to report (and use) for a request that asked for ``requested`` (may be empty)."""
        return requested or self.models()[0]

    def check_ready(self):
        """Return if the backend can serve now; raise :class:`BackendError` if it cannot."""

    def generate(self, request, result):
        """Yield text deltas for ``request``; set ``result.finish_reason`` and usage before returning."""
        raise NotImplementedError

    def close(self):
        """Release pooled connections, models and the like."""


class BackendError(Exception):
    """Generation failed. ``status`` is the HTTP status the failure maps to before a stream starts."""

    status = 502
    code = "upstream_error"
    retry_after = None

    def __init__(self, message, *, retry_after=None):
        super().__init__(message)
        self.message = message
        if retry_after is not None:
            self.retry_after = retry_after


class BackendUnavailable(BackendError):
    """The backend cannot be reached or has no capacity right now."""

    status = 503
    code = "backend_unavailable"


class BackendTimeout(BackendError):
    """The backend did not answer in time."""

    status = 504
    code = "backend_timeout"


class UpstreamError(BackendError):
    """The backend answered with an error, or with something that is not a valid answer."""


class RejectedRequest(BackendError):
    """The backend refused the request itself (too long for the context, unknown model): the client's to fix."""

    status = 400
    code = "rejected_by_backend"


class RateLimited(BackendError):
    """The backend asks the client to slow down."""

    status = 429
    code = "rate_limited"
