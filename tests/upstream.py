"""A small, real OpenAI-compatible upstream for tests and benchmarks.

It speaks HTTP/1.1 with chunked SSE on ``POST /v1/chat/completions`` and lists one model on
``GET /v1/models``. What it does is chosen by the request's ``model``, ``name[:arg[:arg]]``:

=====================  ========================================================================
(anything else)        streams the last user message back word by word, with usage
``slow:N:DELAY``       N deltas ``tN `` with DELAY seconds between them
``fast:N``             N one-character deltas as fast as it can, one write per event
``midfail:N``          N deltas, then drops the connection without ending the stream
``errorevent``         one delta, then ``data: {"error": ...}``
``garbage``            one delta, then a data line that is not JSON
``nonfinite``          one delta carrying ``NaN`` and ``-Infinity``, as Python's ``json`` writes them
``noend``              deltas, then ends the body without ``[DONE]`` or a finish reason
``plain:N``            N deltas in a close-delimited (not chunked) body
``gzip:N``             N deltas, the event stream gzip-compressed (``Content-Encoding``), flushed per event
``hangup:N``           N deltas, then closes the kept-alive connection without saying so
``error:STATUS``       answers STATUS with an OpenAI error object (``Retry-After`` on 429/503)
``stall:SECONDS``      waits before sending anything, then echoes
``headstall:SECONDS``  sends headers, waits, then echoes
``paced:N``            N deltas, 5 ms apart; before each write it asks the kernel whether the
                       previous one is still unacknowledged (see ``Stats.held``)
=====================  ========================================================================

``Upstream(nodelay=False)`` writes with Nagle's algorithm on, as gevent's pywsgi and Werkzeug's development
server do: a small write waits while an earlier one is unacknowledged, so a client that delays its ACKs
stalls the stream ~40 ms. ``paced`` counts such writes in ``Stats.held``.

It counts connections accepted and streams started, completed and aborted (the client went away before
the end), and keeps
every request body it received, so tests can check what a backend really sent.
"""

import json
import select
import socket
import struct
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL = "upstream-model"


class Stats:
    def __init__(self):
        self._lock = threading.Lock()
        self.started = 0
        self.completed = 0
        self.aborted = 0
        self.held = 0  # writes made while an earlier write was still unacknowledged
        self.connections = 0  # connections accepted
        self.paced_writes = 0
        self.bodies = []

    def add(self, name, amount=1):
        with self._lock:
            setattr(self, name, getattr(self, name) + amount)

    def record(self, body):
        with self._lock:
            self.bodies.append(body)

    def snapshot(self):
        with self._lock:
            return {"started": self.started, "completed": self.completed, "aborted": self.aborted}

    def wait_for(self, predicate, timeout=5.0):
        """Wait until ``predicate(stats)`` holds; return whether it did."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self):
                return True
            time.sleep(0.02)
        return predicate(self)


def _chunk(payload):
    return b"%X\r\n%s\r\n" % (len(payload), payload)


def _event(obj):
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def _delta_event(text=None, finish_reason=None, usage=None):
    event = {"id": "up-1", "object": "chat.completion.chunk", "created": 0, "model": MODEL}
    if usage is not None:
        event["choices"] = []
        event["usage"] = usage
    else:
        delta = {"content": text} if text is not None else {}
        event["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish_reason}]
    return _event(event)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "TestUpstream/1"

    def log_message(self, format, *args):  # keep test output quiet
        pass

    # -- helpers --------------------------------------------------------------------------------------

    def send_json(self, status, obj, headers=None):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def start_stream(self, chunked=True):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.flush()

    # -- routes ---------------------------------------------------------------------------------------

    def do_GET(self):
        if self.path.rstrip("/") == "/v1/models":
            self.send_json(200, {"object": "list", "data": [{"id": MODEL, "object": "model"}]})
        elif self.path == "/stats":
            self.send_json(200, self.server.stats.snapshot())
        else:
            self.send_json(404, {"error": {"message": "not found", "type": "invalid_request_error"}})

    def do_POST(self):
        if self.path != "/v1/chat/completions":
            self.send_json(404, {"error": {"message": "not found"}})
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        self.server.stats.record(body)
        name, *args = str(body.get("model") or "").split(":")
        scenario = getattr(self, "scenario_" + name, None)
        if scenario is None:
            scenario, args = self.scenario_echo, []
        stats = self.server.stats
        try:
            scenario(body, *args)
        except (BrokenPipeError, ConnectionResetError):
            stats.add("aborted")
            self.close_connection = True

    # -- scenarios ------------------------------------------------------------------------------------

    def stream(self, texts, delay=0.0, finish_reason="stop", usage=None, chunked=True):
        stats = self.server.stats
        stats.add("started")
        self.start_stream(chunked)
        frame = _chunk if chunked else (lambda payload: payload)
        for text in texts:
            if delay:
                time.sleep(delay)
            self.wfile.write(frame(_delta_event(text)))
        self.wfile.write(frame(_delta_event(finish_reason=finish_reason)))
        if usage is not None:
            self.wfile.write(frame(_delta_event(usage=usage)))
        self.wfile.write(frame(b"data: [DONE]\n\n"))
        if chunked:
            self.wfile.write(b"0\r\n\r\n")
        stats.add("completed")

    def scenario_echo(self, body):
        user = [m["content"] for m in body.get("messages", []) if m.get("role") == "user"]
        words = (user[-1] if user else "").split()
        limit = body.get("max_tokens") or len(words)
        texts = [("" if i == 0 else " ") + w for i, w in enumerate(words[:limit])]
        usage = {"prompt_tokens": 7, "completion_tokens": len(texts), "total_tokens": 7 + len(texts)}
        self.stream(texts, finish_reason="length" if len(words) > limit else "stop", usage=usage)

    def unacknowledged(self):
        """Bytes-carrying segments this connection has sent that the client has not yet acknowledged."""
        info = self.connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
        return struct.unpack_from("I", info, 24)[0]  # struct tcp_info: tcpi_unacked

    def scenario_paced(self, body, count="5"):
        stats = self.server.stats
        stats.add("started")
        self.start_stream()
        self.wfile.write(_chunk(_delta_event("")))  # what a server sends first, with the headers
        for i in range(int(count)):
            time.sleep(0.005)  # far longer than an immediate ACK takes; far shorter than a delayed one
            stats.add("paced_writes")
            if self.unacknowledged():
                stats.add("held")
            self.wfile.write(_chunk(_delta_event(f"p{i} ")))
        self.wfile.write(_chunk(_delta_event(finish_reason="stop")) + _chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
        stats.add("completed")

    def scenario_slow(self, body, count="20", delay="0.05"):
        self.stream([f"t{i} " for i in range(int(count))], delay=float(delay))

    def scenario_fast(self, body, count="1000"):
        self.stream(["x"] * int(count))

    def scenario_plain(self, body, count="5"):
        self.stream([f"p{i} " for i in range(int(count))], chunked=False)

    def scenario_gzip(self, body, count="3"):
        stats = self.server.stats
        stats.add("started")
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Content-Encoding", "gzip")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        gzip = zlib.compressobj(wbits=31)
        events = [_delta_event(f"z{i} ") for i in range(int(count))]
        events += [_delta_event(finish_reason="stop"), b"data: [DONE]\n\n"]
        for event in events:
            self.wfile.write(_chunk(gzip.compress(event) + gzip.flush(zlib.Z_SYNC_FLUSH)))
        self.wfile.write(_chunk(gzip.flush()) + b"0\r\n\r\n")
        stats.add("completed")

    def scenario_hangup(self, body, count="3"):
        """A whole chunked answer, then the connection closed without saying so (as an idle timeout would)."""
        self.stream([f"h{i} " for i in range(int(count))])
        self.close_connection = True

    def scenario_stall(self, body, seconds="5"):
        time.sleep(float(seconds))
        self.scenario_echo(body)

    def scenario_headstall(self, body, seconds="5"):
        stats = self.server.stats
        stats.add("started")
        self.start_stream()
        if self.wait_unless_closed(float(seconds)):
            stats.add("aborted")
            self.close_connection = True
            return
        self.wfile.write(_chunk(_delta_event("late")))
        self.wfile.write(_chunk(_delta_event(finish_reason="stop")))
        self.wfile.write(_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
        stats.add("completed")

    def wait_unless_closed(self, seconds):
        """Sleep up to ``seconds``; return True as soon as the client closes its connection."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select([self.connection], [], [], left)
            if readable and self.connection.recv(1, socket.MSG_PEEK) == b"":
                return True
        return False

    def scenario_midfail(self, body, count="3"):
        self.server.stats.add("started")
        self.start_stream()
        for i in range(int(count)):
            self.wfile.write(_chunk(_delta_event(f"m{i} ")))
        self.close_connection = True  # no terminating chunk: the body is cut short

    def scenario_errorevent(self, body):
        self.start_stream()
        self.wfile.write(_chunk(_delta_event("before ")))
        self.wfile.write(_chunk(_event({"error": {"message": "model crashed", "type": "server_error"}})))
        self.wfile.write(_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")

    def scenario_garbage(self, body):
        self.start_stream()
        self.wfile.write(_chunk(_delta_event("before ")))
        self.wfile.write(_chunk(b"data: this is not json\n\n"))
        self.wfile.write(b"0\r\n\r\n")

    def scenario_nonfinite(self, body):
        self.start_stream()
        event = _delta_event("odd ")[:-3] + b',"logprobs":{"content":[{"token":"odd","logprob":-Infinity}]},"t":NaN}\n\n'
        for payload in (event, _delta_event(finish_reason="stop"), b"data: [DONE]\n\n"):
            self.wfile.write(_chunk(payload))
        self.wfile.write(b"0\r\n\r\n")

    def scenario_noend(self, body):
        self.start_stream()
        self.wfile.write(_chunk(_delta_event("cut ")))
        self.wfile.write(b"0\r\n\r\n")

    def scenario_error(self, body, status="500"):
        status = int(status)
        headers = {"Retry-After": "1"} if status in (429, 503) else {}
        message = f"upstream says {status}"
        self.send_json(status, {"error": {"message": message, "type": "server_error", "code": None}}, headers)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024
    nodelay = True

    def get_request(self):
        conn, address = super().get_request()
        self.stats.add("connections")
        if self.nodelay:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as llama-server and uvicorn do
        return conn, address


class Upstream:
    """The upstream server, run in a thread of this process."""

    def __init__(self, host="127.0.0.1", port=0, nodelay=True):
        self.server = Server((host, port), Handler)
        self.server.nodelay = nodelay
        self.server.stats = Stats()
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def stats(self):
        return self.server.stats

    @property
    def url(self):
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def main():
    """Run the upstream in the foreground: ``python -m tests.upstream [PORT]``."""
    import sys

    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    upstream = Upstream(port=port)
    sys.stdout.write(upstream.url + "\n")
    sys.stdout.flush()
    upstream.server.serve_forever()


if __name__ == "__main__":
    main()
