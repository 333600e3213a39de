"""Backends: what turns a chat request into text. See :mod:`kernel.backends.base` for the contract.

A backend is named in ``KERNEL_BACKEND`` either by its entry point name in the group ``kernel.backends``
(the built-ins ``echo`` and ``openai`` are registered there exactly as a third-party package registers its
own) or as ``package.module:factory``. ``auto`` picks ``openai`` when an upstream URL is configured.
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


class BackendNotFound(LookupError):
    """``KERNEL_BACKEND`` names nothing that can be loaded."""


def available():
    """Names of the backends registered in the entry-point group."""
    return sorted(ep.name for ep in entry_points(group=GROUP))


def resolve_name(config):
    """The backend name to load, with ``auto`` decided from the rest of the config."""
    name = config["KERNEL_BACKEND"]
    if name != "auto":
        return name
    if config["KERNEL_UPSTREAM_URL"]:
        return "openai"
    log.warning(
        "KERNEL_UPSTREAM_URL is not set: using the 'echo' backend, which only repeats the last user "
        "message. Set KERNEL_UPSTREAM_URL to an OpenAI-compatible server to chat with a real model."
    )
    return "echo"


def _load_factory(spec):
    if ":" in spec:
        module_name, _, attr = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
            return getattr(module, attr)
        except (ImportError, AttributeError) as exc:
            raise BackendNotFound(f"cannot load backend {spec!r}: {exc}") from exc
    matches = entry_points(group=GROUP, name=spec)
    if not matches:
        raise BackendNotFound(
            f"unknown backend {spec!r}; registered backends: {', '.join(available()) or 'none'} "
            f"(or give one as package.module:factory)"
        )
    return next(iter(matches)).load()


def load(config):
    """Build the backend the config asks for."""
    name = resolve_name(config)
    backend = _load_factory(name)(config)
    log.info("using the %r backend", backend.name)
    return backend
