"""Admin access: ``Authorization: Bearer <admin key>`` on everything that changes the instance's state.

The key is ``KERNEL_ADMIN_KEY``, or else the one in ``<data dir>/admin.key``, created (mode 0600) on the
first start and logged that once, so a fresh install is never open to the world.
"""

import hmac
import logging
import os
import secrets
from pathlib import Path

from flask import current_app, request

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


def init_app(app):
    configured = app.config["KERNEL_ADMIN_KEY"]
    app.extensions["kernel.admin_key"] = configured or load_or_create_key(app.config["KERNEL_DATA_DIR"])
