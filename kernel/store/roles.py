"""Roles: stored personas whose system prompt replaces the client's.

At most one role is the instance's default (``is_default``): the persona that the reserved role id
``default_role`` names. Marking a role default unmarks the one before, in the same transaction.
"""

import sqlite3
import uuid

from . import Conflict, NotFound, now, write

FIELDS = ("name", "description", "system_prompt", "enable_l0_retrieval", "is_default")
FLAGS = ("enable_l0_retrieval", "is_default")
# The role id that means "this instance's default persona" (seed 001's example sends it).
DEFAULT_ROLE_ID = "default_role"


def _row(row):
    role = dict(row)
    for flag in FLAGS:
        role[flag] = bool(role[flag])
    return role


def _valid_id(role_id):
    try:
        return str(uuid.UUID(role_id)) == role_id.lower()
    except (ValueError, AttributeError, TypeError):
        return False


def create(conn, name, system_prompt, description="", enable_l0_retrieval=False, is_default=False):
    role_id = str(uuid.uuid4())
    stamp = now()
    try:
        with write(conn):
            if is_default:
                conn.execute("UPDATE roles SET is_default = 0 WHERE is_default = 1")
            conn.execute(
                "INSERT INTO roles (role_id, name, description, system_prompt, enable_l0_retrieval,"
                " is_default, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (role_id, name, description, system_prompt, int(enable_l0_retrieval), int(is_default), stamp, stamp),
            )
    except sqlite3.IntegrityError:
        raise Conflict(f"a role named {name!r} already exists") from None
    return get(conn, role_id)


def get(conn, role_id):
    row = None
    if _valid_id(role_id):
        row = conn.execute("SELECT * FROM roles WHERE role_id = ?", (role_id.lower(),)).fetchone()
    if row is None:
        raise NotFound(f"no role with id {role_id!r}")
    return _row(row)


def get_default(conn):
    """The role marked as the default, or ``None``."""
    row = conn.execute("SELECT * FROM roles WHERE is_default = 1").fetchone()
    return None if row is None else _row(row)


def resolve(conn, role_id):
    """The role a chat's ``metadata.role_id`` names: ``default_role`` is the default role or ``None``."""
    if role_id == DEFAULT_ROLE_ID:
        return get_default(conn)
    return get(conn, role_id)


def list_all(conn):
    return [_row(r) for r in conn.execute("SELECT * FROM roles ORDER BY rowid")]


def update(conn, role_id, **changes):
    changes = {k: v for k, v in changes.items() if k in FIELDS}
    get(conn, role_id)
    for flag in FLAGS:
        if flag in changes:
            changes[flag] = int(changes[flag])
    assignments = ", ".join(f"{name} = ?" for name in changes)
    try:
        with write(conn):
            if changes.get("is_default"):
                conn.execute("UPDATE roles SET is_default = 0 WHERE is_default = 1 AND role_id != ?", (role_id.lower(),))
            cursor = conn.execute(
                f"UPDATE roles SET {assignments}{', ' if assignments else ''}updated_at = ? WHERE role_id = ?",
                (*changes.values(), now(), role_id.lower()),
            )
    except sqlite3.IntegrityError:
        raise Conflict(f"a role named {changes.get('name')!r} already exists") from None
    if cursor.rowcount == 0:
        raise NotFound(f"no role with id {role_id!r}")
    return get(conn, role_id)


def delete(conn, role_id):
    if not _valid_id(role_id):
        raise NotFound(f"no role with id {role_id!r}")
    with write(conn):
        cursor = conn.execute("DELETE FROM roles WHERE role_id = ?", (role_id.lower(),))
    if cursor.rowcount == 0:
        raise NotFound(f"no role with id {role_id!r}")
