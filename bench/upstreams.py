"""Fake OpenAI-compatible upstreams of several kinds, for the relay benchmarks.

Each streams the same answer for ``POST /v1/chat/completions``: the request's ``model`` is
``N`` (N one-word deltas as fast as it can) or ``N:DELAY`` (DELAY seconds before each), and lists one model
on ``GET /v1/models``. What differs is the server, as real model servers differ:

* ``pywsgi``   gevent's WSGI server: writes with Nagle's algorithm on, keep-alive.
* ``werkzeug`` Werkzeug's development server (threaded, ``socketserver``): Nagle on, as Second Me's own
               local kernel runs.
* ``uvicorn``  an ASGI app under uvicorn (asyncio): sets ``TCP_NODELAY``, as llama-server does.

Run one: ``python -m bench.upstreams KIND PORT``.
"""

import json
import sys
import time

HEAD = {"id": "up", "object": "chat.completion.chunk", "created": 0, "model": "bench"}


def events(model):
    """The SSE events of one answer, as bytes, with the delay before each."""
    count, _, delay = str(model or "20").partition(":")
    count = int(count) if count.isdigit() else 20
    delay = float(delay or 0)

    def event(choices, **extra):
        return b"data: " + json.dumps({**HEAD, "choices": choices, **extra}, separators=(",", ":")).encode() + b"\n\n"

    yield 0, event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
    for i in range(count):
        yield delay, event([{"index": 0, "delta": {"content": f"w{i} "}, "finish_reason": None}])
    yield 0, event([{"index": 0, "delta": {}, "finish_reason": "stop"}])
    yield 0, event([], usage={"prompt_tokens": 5, "completion_tokens": count, "total_tokens": 5 + count})
    yield 0, b"data: [DONE]\n\n"


MODELS = json.dumps({"object": "list", "data": [{"id": "bench", "object": "model"}]}).encode()


def wsgi_app(sleep):
    def app(environ, start_response):
        if environ["REQUEST_METHOD"] == "GET":
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(MODELS)))])
            return [MODELS]
        size = int(environ.get("CONTENT_LENGTH") or 0)
        body = json.loads(environ["wsgi.input"].read(size) or b"{}")
        start_response("200 OK", [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")])

        def stream():
            for delay, data in events(body.get("model")):
                if delay:
                    sleep(delay)
                yield data

        return stream()

    return app


async def asgi_app(scope, receive, send):
    import asyncio

    if scope["type"] != "http":
        return
    if scope["method"] == "GET":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": MODELS})
        return
    raw = b""
    while True:
        message = await receive()
        raw += message.get("body", b"")
        if not message.get("more_body"):
            break
    body = json.loads(raw or b"{}")
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
    for delay, data in events(body.get("model")):
        if delay:
            await asyncio.sleep(delay)
        await send({"type": "http.response.body", "body": data, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


def main(kind, port):
    if kind == "pywsgi":
        from gevent import monkey

        monkey.patch_all()
        import gevent
        from gevent.pywsgi import WSGIServer

        WSGIServer(("127.0.0.1", port), wsgi_app(gevent.sleep), log=None, backlog=4096).serve_forever()
    elif kind == "werkzeug":
        from werkzeug.serving import WSGIRequestHandler, make_server

        WSGIRequestHandler.protocol_version = "HTTP/1.1"  # keep-alive, as a client of it would use
        WSGIRequestHandler.log_request = lambda *args, **kwargs: None
        make_server("127.0.0.1", port, wsgi_app(time.sleep), threaded=True).serve_forever()
    elif kind == "uvicorn":
        import uvicorn

        uvicorn.run(asgi_app, host="127.0.0.1", port=port, log_level="warning", access_log=False, backlog=4096)
    else:
        raise SystemExit(f"unknown upstream kind {kind!r}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
