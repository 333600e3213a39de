"""Roles: stored personas whose system prompt replaces the client's."""

import sqlite3
import uuid

from . import Conflict, NotFound, now, write

FIELDS = ("name", "description", "system_prompt", "enable_l0_retrieval")


def _row(row):
    role = dict(row)
    role["enable_l0_retrieval"] = bool(role["enable_l0_retrieval"])
    return role


def _valid_id(role_id):
    try:
        return str(uuid.UUID(role_id)) == role_id.lower()
    except (ValueError, AttributeError, TypeError):
        return False


def create(conn, name, system_prompt, description="", enable_l0_retrieval=False):
    role_id = str(uuid.uuid4())
    stamp = now()
    try:
        with write(conn):
            conn.execute(
                "INSERT INTO roles (role_id, name, description, system_prompt, enable_l0_retrieval,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (role_id, name, description, system_prompt, int(enable_l0_retrieval), stamp, stamp),
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


def list_all(conn):
    return [_row(r) for r in conn.execute("SELECT * FROM roles ORDER BY rowid")]


def update(conn, role_id, **changes):
    changes = {k: v for k, v in changes.items() if k in FIELDS}
    get(conn, role_id)
    if "enable_l0_retrieval" in changes:
        changes["enable_l0_retrieval"] = int(changes["enable_l0_retrieval"])
    assignments = ", ".join(f"{name} = ?" for name in changes)
    try:
        with write(conn):
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
