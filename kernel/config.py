"""Configuration: ``KERNEL_*`` environment variables, read once at start into the app config."""

import os


class ConfigError(ValueError):
    """A setting has a value the server cannot run with."""


def _text(value):
    return value


def _positive_float(value):
    number = float(value)
    if number <= 0:
        raise ValueError("must be greater than 0")
    return number


def _positive_int(value):
    number = int(value)
    if number <= 0:
        raise ValueError("must be a whole number greater than 0")
    return number


def _non_negative_int(value):
    number = int(value)
    if number < 0:
        raise ValueError("must be a whole number, 0 or more")
    return number


def _choice(*allowed):
    def parse(value):
        if value.lower() not in allowed:
            raise ValueError("must be one of " + ", ".join(allowed))
        return value.lower()

    return parse


# name: (default, parser). Defaults are documented in the README's configuration table.
SETTINGS = {
    "KERNEL_BACKEND": ("auto", _text),
    "KERNEL_UPSTREAM_URL": ("", _text),
    "KERNEL_UPSTREAM_API_KEY": ("", _text),
    "KERNEL_UPSTREAM_MODEL": ("", _text),
    "KERNEL_UPSTREAM_TIMEOUT_S": (120.0, _positive_float),
    "KERNEL_SSE_PING_S": (15.0, _positive_float),
    "KERNEL_MAX_BODY_BYTES": (10 * 1024 * 1024, _positive_int),
    "KERNEL_DATA_DIR": ("./data", _text),
    "KERNEL_ADMIN_KEY": ("", _text),
    "KERNEL_LOG_FORMAT": ("text", _choice("text", "json")),
    "KERNEL_ALLOWED_HOSTS": ("", _text),
    "KERNEL_TRUSTED_PROXIES": (0, _non_negative_int),
    "KERNEL_CORS_ORIGINS": ("", _text),
    "KERNEL_CHAT_KEYS": ("", _text),
    "KERNEL_CHAT_KEYS_FILE": ("", _text),
    "KERNEL_MAX_STREAMS_PER_CLIENT": (0, _non_negative_int),
    "KERNEL_METRICS_ALLOW": ("127.0.0.0/8,::1/128", _text),
    # gunicorn.conf.py reads it (and tells the app); kernel/shutdown.py acts on it.
    "KERNEL_GRACEFUL_TIMEOUT_S": (30.0, _positive_float),
    "KERNEL_L0_CHUNK_CHARS": (1000, _positive_int),
    "KERNEL_L0_TOP_K": (3, _positive_int),
    "KERNEL_LOCAL_MODEL_PATH": ("", _text),
    "KERNEL_LOCAL_CTX": (2048, _positive_int),
    "KERNEL_LOCAL_THREADS": (0, _non_negative_int),
    "KERNEL_LOCAL_QUEUE": (8, _non_negative_int),
    # gunicorn reads it too (gunicorn.conf.py); the registry needs it to decide about tunnels.
    "KERNEL_WORKERS": (1, _positive_int),
    "KERNEL_TUNNELS": ("auto", _choice("auto", "on", "off")),
    "KERNEL_PROBE_INTERVAL_S": (10.0, _positive_float),
    "KERNEL_TUNNEL_PING_S": (10.0, _positive_float),
    "KERNEL_TUNNEL_TIMEOUT_S": (30.0, _positive_float),
    "KERNEL_TUNNEL_MAX_MESSAGE_BYTES": (1024 * 1024, _positive_int),
    "KERNEL_TUNNEL_MAX_STREAMS": (1000, _positive_int),
}


def from_environ(environ=None):
    """Return the settings as a dict, parsed from ``environ`` (default ``os.environ``)."""
    environ = os.environ if environ is None else environ
    config = {}
    for name, (default, parse) in SETTINGS.items():
        raw = environ.get(name)
        if raw is None or raw.strip() == "":
            config[name] = default
            continue
        try:
            config[name] = parse(raw.strip())
        except ValueError as exc:
            raise ConfigError(f"{name}={raw!r} is not valid: {exc}") from None
    return config
