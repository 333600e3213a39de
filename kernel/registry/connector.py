"""The connector: run on the instance's machine, it holds the tunnel open and answers the registry's chats.

``flask --app app connect --registry URL --instance-id ID [--target URL]`` (the secret from
``KERNEL_INSTANCE_SECRET``, ``--secret-file`` or ``--secret``; also ``python -m kernel.registry.connector``,
which needs no app). Each ``start`` becomes a ``POST {target}/api/kernel2/chat`` on a thread of its own,
so many chats run at once; ``cancel`` closes that request's connection, which the kernel notices within
about a second and stops generating. When the registry goes away the connector reconnects by itself,
with exponential backoff and jitter. It logs one line per change of state, and never the secret.
"""

import http.client
import json
import logging
import os
import random
import socket
import sys
import threading
import time
from urllib.parse import urlsplit

import click

from kernel import __version__

from . import protocol, ws

log = logging.getLogger("kernel.registry.connector")

DEFAULT_TARGET = "http://127.0.0.1:8002"
READ_SIZE = 64 * 1024
CONNECT_TIMEOUT_S = 10.0
IDLE_KERNEL_CONNECTIONS = 32
# Refusals that retrying cannot fix: a wrong secret, an unknown or deleted instance, a direct instance.
FATAL_STATUSES = (401, 403, 404, 409)


class Fatal(Exception):
    """Stop: the registry will not take this connector as it is configured."""


def connect_url(registry, instance_id):
    base = registry.rstrip("/")
    if base.startswith("http"):
        base = "ws" + base[4:]
    return f"{base}/api/instances/{instance_id}/connect"


def backoff(attempt, base=0.5, cap=30.0):
    """Seconds to wait before reconnect attempt ``attempt`` (0-based): exponential, capped, half jittered."""
    ceiling = min(cap, base * 2 ** min(attempt, 30))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def _reason_of(body):
    try:
        return json.loads(body).get("message") or body[:200].decode("utf-8", "replace")
    except (ValueError, AttributeError):
        return body[:200].decode("utf-8", "replace") or "no details"


class Relay:
    """One chat: POST it to the local kernel and send what comes back through the tunnel."""

    def __init__(self, session, request_id, body):
        self.session = session
        self.id = request_id
        self.body = body
        self.cancelled = False
        self.conn = None

    def cancel(self):
        self.cancelled = True
        conn = self.conn
        if conn is not None and conn.sock is not None:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)  # wakes the reading thread; the kernel sees us leave
            except OSError:
                pass

    def run(self):
        try:
            self._relay()
        except ws.Closed:
            pass
        except (OSError, http.client.HTTPException) as exc:
            self._fail(f"the instance's kernel could not be reached: {exc}")
        except (ValueError, AttributeError, TypeError):
            self._fail("the instance's kernel sent an answer that is not a chat completion stream")
        finally:
            if self.conn is not None:
                self.conn.close()
            self.session.relays.pop(self.id, None)

    def _fail(self, message):
        if not self.cancelled:
            try:
                self.session.send({"type": "error", "id": self.id, "status": 502, "message": message})
            except ws.Closed:
                pass

    def _post(self):
        """POST the chat to the kernel on a kept-alive connection (a new one if that one went stale)."""
        body = dict(self.body) if isinstance(self.body, dict) else {}
        body["stream"] = True
        payload = json.dumps(body).encode()
        for reused in (True, False):
            self.conn = self.session.kernel_connection(reuse=reused)
            try:
                self.conn.request("POST", self.session.chat_path, body=payload,
                                  headers={"Content-Type": "application/json", "Accept": "text/event-stream"})
                return self.conn.getresponse()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.conn.close()
                if not reused or self.cancelled:
                    raise
        raise AssertionError("unreachable")

    def _relay(self):
        response = self._post()
        if self.cancelled:
            return
        if response.status != 200:
            self.session.send({"type": "error", "id": self.id, "status": response.status,
                               "message": _reason_of(response.read(64 * 1024))})
            return
        finish_reason, usage, pending = "stop", {}, b""
        while not self.cancelled:
            block = response.read1(READ_SIZE)
            if not block:
                break
            lines = (pending + block).split(b"\n")
            pending = lines.pop()
            texts = []
            for line in lines:
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    self._flush(texts)
                    self.session.send({"type": "done", "id": self.id, "finish_reason": finish_reason,
                                       "usage": usage})
                    if not pending and not response.read(READ_SIZE) and not response.will_close:
                        self.session.kernel_idle(self.conn)  # the body is over: keep the connection
                        self.conn = None
                    return
                event = json.loads(data)
                if event.get("error"):
                    self._flush(texts)
                    error = event["error"]
                    self.session.send({"type": "error", "id": self.id, "status": event.get("code") or 502,
                                       "message": error.get("message") if isinstance(error, dict) else str(error)})
                    return
                if event.get("usage"):
                    usage = event["usage"]
                for choice in event.get("choices") or ():
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        texts.append(text)
                    if choice.get("finish_reason"):
                        finish_reason = choice["finish_reason"]
            self._flush(texts)
        if not self.cancelled:
            self.session.send({"type": "error", "id": self.id, "status": 502,
                               "message": "the instance's kernel ended the answer early"})

    def _flush(self, texts):
        if not texts:
            return
        text = "".join(texts)
        step = self.session.max_chunk_chars
        for start in range(0, len(text), step):
            self.session.send({"type": "chunk", "id": self.id, "text": text[start:start + step]})


class Session:
    """One connection to the registry, from ``welcome`` until it closes."""

    def __init__(self, connector, websocket, welcome):
        self.ws = websocket
        self.target = connector.target
        self.kernel_timeout = connector.kernel_timeout
        self.max_concurrency = connector.max_concurrency
        self.ping_s = float(welcome.get("ping_interval_s") or 10)
        self.timeout_s = float(welcome.get("timeout_s") or 30)
        self.max_chunk_chars = max(1024, int(welcome.get("max_message_bytes") or 1 << 20) // 8)
        self.chat_path = self.target.path.rstrip("/") + "/api/kernel2/chat"
        self.relays = {}
        self._idle = []  # kept-alive connections to the kernel
        self._idle_lock = threading.Lock()

    def kernel_connection(self, reuse=True):
        with self._idle_lock:
            if reuse and self._idle:
                return self._idle.pop()
        return http.client.HTTPConnection(self.target.hostname, self.target.port or 80, timeout=self.kernel_timeout)

    def kernel_idle(self, conn):
        with self._idle_lock:
            if len(self._idle) < IDLE_KERNEL_CONNECTIONS:
                self._idle.append(conn)
                return
        conn.close()

    def send(self, message):
        self.ws.send_text(protocol.dumps(message))

    def serve(self):
        """Answer messages until the connection ends; returns the close code and reason."""
        threading.Thread(target=self._keepalive, daemon=True, name="tunnel-keepalive").start()
        try:
            while True:
                message = protocol.loads(self.ws.receive())
                if message["type"] == "start":
                    self._start(protocol.request_id(message), message.get("request"))
                elif message["type"] == "cancel":
                    relay = self.relays.get(protocol.request_id(message))
                    if relay is not None:
                        relay.cancel()
        except ws.Closed as exc:
            return exc.code, exc.reason
        except protocol.BadMessage as exc:
            self.ws.close(protocol.BAD_MESSAGE, str(exc))
            return protocol.BAD_MESSAGE, str(exc)
        finally:
            for relay in list(self.relays.values()):
                relay.cancel()
            self.ws.release()

    def _start(self, request_id, body):
        if len(self.relays) >= self.max_concurrency:
            self.send({"type": "error", "id": request_id, "status": 503,
                       "message": f"the instance is answering {len(self.relays)} chats, its most"})
            return
        relay = Relay(self, request_id, body)
        self.relays[request_id] = relay
        threading.Thread(target=relay.run, daemon=True, name=f"chat-{request_id}").start()

    def _keepalive(self):
        ws.keep_alive(self.ws, self.ping_s, self.timeout_s, time.sleep, lambda: self.ws.closed is None,
                      protocol.SILENT)


class Connector:
    def __init__(self, registry, instance_id, secret, target=DEFAULT_TARGET, max_concurrency=256,
                 max_backoff=30.0, kernel_timeout=300.0, max_message_bytes=1 << 20):
        self.url = connect_url(registry, instance_id)
        self.instance_id = instance_id
        self.secret = secret
        self.target = urlsplit(target)
        self.max_concurrency = max_concurrency
        self.max_backoff = max_backoff
        self.kernel_timeout = kernel_timeout
        self.max_message_bytes = max_message_bytes
        self.state = None

    def _state(self, state, message, *args, level=logging.INFO):
        """Log a line when the state changes (a run of identical failures logs once)."""
        if state != self.state:
            self.state = state
            log.log(level, message, *args)

    def run(self):
        """Connect, serve, reconnect; forever, or until the registry refuses us for good (:class:`Fatal`)."""
        attempt = 0
        while True:
            started = time.monotonic()
            try:
                self._connect_and_serve()
            except ws.HandshakeRejected as exc:
                reason = f"{exc.status} {_reason_of(exc.body)}"
                if exc.status in FATAL_STATUSES:
                    raise Fatal(f"the registry refused instance {self.instance_id}: {reason}") from None
                self._state(f"rejected {exc.status}", "registry refused the connection (%s); retrying", reason,
                            level=logging.WARNING)
            except (OSError, ws.Closed) as exc:
                self._state("unreachable", "registry unreachable at %s (%s); retrying", self.url, exc,
                            level=logging.WARNING)
            if time.monotonic() - started > 60:
                attempt = 0  # it stayed up a while: start over from short waits
            delay = backoff(attempt, cap=self.max_backoff)
            attempt += 1
            log.debug("reconnecting in %.2f s", delay)
            time.sleep(delay)

    def _connect_and_serve(self):
        headers = [("Authorization", f"Bearer {self.secret}")]
        websocket = ws.connect(self.url, headers, self.max_message_bytes, CONNECT_TIMEOUT_S)
        try:
            websocket.send_text(protocol.dumps({"type": "hello", "version": protocol.VERSION,
                                                "software": f"kernel-chat/{__version__}"}))
            welcome = protocol.loads(websocket.receive(timeout=CONNECT_TIMEOUT_S))
            if welcome["type"] != "welcome":
                raise protocol.BadMessage("the registry did not answer 'hello' with 'welcome'")
        except (protocol.BadMessage, ws.Closed) as exc:
            websocket.close(protocol.BAD_MESSAGE, str(exc))
            websocket.release()
            raise ws.Closed(protocol.BAD_MESSAGE, f"handshake failed: {exc}") from None
        session = Session(self, websocket, welcome)
        websocket.sock.settimeout(session.timeout_s)
        self._state("online", "connected to %s as instance %s (protocol v%s); relaying to %s",
                    self.url, self.instance_id, welcome.get("version"), self.target.geturl())
        code, reason = session.serve()
        if code == protocol.FATAL:
            raise Fatal(f"the registry closed the tunnel for good: {reason}")
        self._state("offline", "disconnected (%s %s); reconnecting", code, reason, level=logging.WARNING)


def read_secret(secret, secret_file):
    if secret_file:
        with open(secret_file, encoding="utf-8") as handle:
            secret = handle.read().strip()
    if not secret:
        raise click.UsageError("no instance secret: set KERNEL_INSTANCE_SECRET, or pass --secret-file (or --secret)")
    return secret


@click.command("connect")
@click.option("--registry", required=True, envvar="KERNEL_REGISTRY_URL",
              help="The registry's base URL, e.g. https://registry.example.org (or KERNEL_REGISTRY_URL).")
@click.option("--instance-id", required=True, envvar="KERNEL_INSTANCE_ID", help="This instance's id.")
@click.option("--secret", envvar="KERNEL_INSTANCE_SECRET", show_envvar=True,
              help="The instance secret. Prefer the environment variable or --secret-file: arguments show in ps.")
@click.option("--secret-file", type=click.Path(exists=True, dir_okay=False), help="A file holding the secret.")
@click.option("--target", default=DEFAULT_TARGET, show_default=True,
              help="The local Kernel Chat server whose /api/kernel2/chat answers.")
@click.option("--max-concurrency", default=256, show_default=True, type=click.IntRange(1, 10000),
              help="Chats relayed at once; more are refused with 503.")
@click.option("--max-backoff", default=30.0, show_default=True, type=click.FloatRange(0.1, 3600),
              help="Longest wait between reconnect attempts, in seconds.")
def connect_command(registry, instance_id, secret, secret_file, target, max_concurrency, max_backoff):
    """Connect this machine's Kernel Chat to a registry, through a tunnel, and relay its chats."""
    if not logging.getLogger().handlers and not log.handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    connector = Connector(registry, instance_id, read_secret(secret, secret_file), target,
                          max_concurrency=max_concurrency, max_backoff=max_backoff)
    try:
        connector.run()
    except Fatal as exc:
        log.error("%s; stopping", exc)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        log.info("stopped")


def init_app(app):
    app.cli.add_command(connect_command)


if __name__ == "__main__":
    connect_command(prog_name=f"{os.path.basename(sys.executable)} -m kernel.registry.connector")
