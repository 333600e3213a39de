"""Keys: the admin key on everything that changes the instance's state, chat keys on the chat routes.

The admin key is ``KERNEL_ADMIN_KEY``, or else the one in ``<data dir>/admin.key``, created (mode 0600)
on the first start and logged that once, so a fresh install is never open to the world.

Chat keys (``KERNEL_CHAT_KEYS``, comma-separated, and/or ``KERNEL_CHAT_KEYS_FILE``, one per line) are for a
server on the internet: when any is set, every chat route needs ``Authorization: Bearer <chat key>`` (the
admin key works too). Keys are compared in constant time, each of them, whatever matches.
"""

import hashlib
import hmac
import logging
import os
import secrets
from pathlib import Path

from flask import current_app, g, request

from .errors import ApiError

log = logging.getLogger(__name__)

KEY_FILE = "admin.key"


def key_path(data_dir):
    return Path(data_dir) / KEY_FILE


def load_or_create_key(data_dir):
    """The key stored in the data dir; the first caller creates it, atomically, even across workers."""
    path = key_path(data_dir)
    if not path.exists():
        key = secrets.token_urlsafe(32)
        temporary = path.with_name(f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(key + "\n")
        try:
            os.link(temporary, path)  # fails if another worker got there first; its key stands
            log.warning("generated an admin key, saved to %s (mode 0600): %s", path, key)
        except FileExistsError:
            pass
        finally:
            os.unlink(temporary)
    key = path.read_text().strip()
    if not key:
        raise RuntimeError(f"{path} is empty; delete it to have a new admin key generated")
    return key


def require_admin():
    """A ``before_request`` hook: 401 unless the request carries the admin key."""
    expected = current_app.extensions["kernel.admin_key"]
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise ApiError(401, "This endpoint needs the admin key: Authorization: Bearer <key>",
                       headers={"WWW-Authenticate": "Bearer"})
    if not hmac.compare_digest(given.strip().encode(), expected.encode()):
        raise ApiError(401, "The admin key is not valid", headers={"WWW-Authenticate": "Bearer"})


def bearer():
    """The token of an ``Authorization: Bearer`` header, or ``None``."""
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return given.strip() if scheme.lower() == "bearer" and given.strip() else None


def chat_keys(config):
    """The configured chat keys, from the setting and the file."""
    keys = [k.strip() for k in config["KERNEL_CHAT_KEYS"].split(",") if k.strip()]
    if config["KERNEL_CHAT_KEYS_FILE"]:
        text = Path(config["KERNEL_CHAT_KEYS_FILE"]).read_text()
        keys += [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return keys


def require_chat_key():
    """A ``before_request`` hook for chat routes: 401 unless no chat keys are set or the request has one.

    Sets ``g.client_id``: who is asking, for per-client limits (a digest of the key, never the key).
    """
    keys = current_app.extensions["kernel.chat_keys"]
    given = bearer()
    if not keys:
        g.client_id = None
        return
    if given is None:
        raise ApiError(401, "This server needs a chat key: Authorization: Bearer <key>",
                       headers={"WWW-Authenticate": "Bearer"})
    candidates = [*keys, current_app.extensions["kernel.admin_key"]]
    matched = False
    for key in candidates:  # every key is compared, so the time says nothing about which matched
        matched |= hmac.compare_digest(given.encode(), key.encode())
    if not matched:
        raise ApiError(401, "The chat key is not valid", headers={"WWW-Authenticate": "Bearer"})
    g.client_id = "key:" + hashlib.sha256(given.encode()).hexdigest()[:12]


def init_app(app):
    configured = app.config["KERNEL_ADMIN_KEY"]
    app.extensions["kernel.admin_key"] = configured or load_or_create_key(app.config["KERNEL_DATA_DIR"])
    app.extensions["kernel.chat_keys"] = chat_keys(app.config)
