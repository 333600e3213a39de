"""The tunnel protocol's messages, shared by the registry and the connector. See docs/registry.md.

Every message is one JSON object in one WebSocket text message, with a ``type``. Unknown types and
unknown fields are ignored, so either side may add some without a new version.

connector -> registry: ``hello`` (first), then ``chunk``, ``done``, ``error`` for requests by ``id``.
registry -> connector: ``welcome`` (answer to hello), then ``start`` and ``cancel``.
"""

import json

VERSION = 1
MIN_VERSION = 1

# Close codes of our own (4000-4999 are the application's).
REPLACED = 4000
UNSUPPORTED_VERSION = 4001
BAD_MESSAGE = 4002
SILENT = 4003
# Closed by the registry for good: the connector should stop instead of reconnecting.
FATAL = 4100

MAX_ERROR_MESSAGE = 500
FINISH_REASONS = ("stop", "length", "content_filter", "tool_calls")


class BadMessage(ValueError):
    """A message that breaks the protocol: the connection that sent it is closed."""


def dumps(message):
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"))


def loads(text):
    """A message as a dict with a string ``type``; :class:`BadMessage` otherwise."""
    try:
        message = json.loads(text)
    except ValueError:
        raise BadMessage("a message is not JSON") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise BadMessage("a message is not a JSON object with a 'type'")
    return message


def request_id(message):
    value = message.get("id")
    if not isinstance(value, str) or not 0 < len(value) <= 64:
        raise BadMessage(f"a {message['type']!r} message has no valid 'id'")
    return value


def count(value):
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**53 else 0


def error_status(value):
    """An instance's error status as one the registry may answer with: 4xx or 5xx, else 502."""
    if isinstance(value, int) and not isinstance(value, bool) and 400 <= value <= 599:
        return value
    return 502


def error_text(value):
    text = value if isinstance(value, str) else "the instance reported an error"
    return text[:MAX_ERROR_MESSAGE]
