"""Server-sent events: the one place that turns data into bytes on the wire.

Each event is ``data: <payload>`` lines ended by a blank line; a comment line (``: ping``) keeps idle
connections open through proxies and is ignored by every SSE client, the OpenAI SDK included.
"""

import orjson

DONE = b"data: [DONE]\n\n"
PING = b": ping\n\n"


def encode(data):
    """Encode one event. ``data`` is a JSON-serialisable object or an already-serialised string."""
    if not isinstance(data, str):
        return b"data: " + orjson.dumps(data) + b"\n\n"  # JSON text has no raw line breaks
    if "\n" in data or "\r" in data:
        lines = data.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        return "".join(f"data: {line}\n" for line in lines).encode("utf-8") + b"\n"
    return f"data: {data}\n\n".encode("utf-8")


def around(before, after):
    """``(head, tail)``: the bytes that make one event of ``before + value + after``.

    For a hot path that serialises only part of an event's JSON (``before`` and ``after`` are the
    serialised rest, as bytes, with no line breaks), then sends ``head + value + tail``.
    """
    return b"data: " + before, after + b"\n\n"


def comment(text="ping"):
    """A comment line, one per line of ``text``; never seen by clients as an event."""
    return "".join(f": {line}\n" for line in text.splitlines() or [""]).encode("utf-8") + b"\n"
