"""The registry's tables: instances, their status, and a lease that picks which worker probes.

Knows nothing of HTTP. An instance's secret is a 256-bit random token; only its SHA-256 is stored (a
token that random needs no slow hash), and it is compared in constant time. A direct instance's
``api_key`` is stored as given, since the registry must send it to the instance's endpoint; it is never
returned by the API.
"""

import hashlib
import hmac
import secrets
import time
import uuid

from kernel.store import NotFound, now, write

SECRET_PREFIX = "kis_"
PUBLIC_FIELDS = ("instance_id", "name", "description", "mode", "status", "public", "endpoint", "model",
                 "last_seen_at", "created_at", "updated_at")
EDITABLE = ("name", "description", "public", "endpoint", "api_key", "model")
NULLABLE = ("endpoint", "api_key", "model")


def new_secret():
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def secret_hash(secret):
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def valid_id(instance_id):
    try:
        return str(uuid.UUID(instance_id)) == instance_id.lower()
    except (ValueError, AttributeError, TypeError):
        return False


def _public(row):
    fields = {name: row[name] for name in PUBLIC_FIELDS}
    fields["public"] = bool(fields["public"])
    return fields


def _row(conn, instance_id):
    row = None
    if valid_id(instance_id):
        row = conn.execute("SELECT * FROM instances WHERE instance_id = ?", (instance_id.lower(),)).fetchone()
    if row is None:
        raise NotFound(f"no instance with id {instance_id!r}")
    return row


def create(conn, name, description="", endpoint=None, api_key=None, model=None, public=False):
    """A new instance: ``(public fields, secret)``. The secret is shown this once."""
    instance_id = str(uuid.uuid4())
    secret = new_secret()
    stamp = now()
    mode = "direct" if endpoint else "tunnel"
    with write(conn):
        conn.execute(
            "INSERT INTO instances (instance_id, name, description, mode, public, endpoint, api_key, model,"
            " secret_sha256, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (instance_id, name, description, mode, int(public), endpoint or None, api_key or None, model or None,
             secret_hash(secret), stamp, stamp),
        )
    return get(conn, instance_id), secret


def get(conn, instance_id):
    return _public(_row(conn, instance_id))


def get_full(conn, instance_id):
    """Every column, the API key included: for the registry's own use, never for a response."""
    return dict(_row(conn, instance_id))


def page(conn, limit, offset):
    rows = conn.execute("SELECT * FROM instances ORDER BY created_at, rowid LIMIT ? OFFSET ?", (limit, offset))
    total = conn.execute("SELECT COUNT(*) FROM instances").fetchone()[0]
    return [_public(r) for r in rows], total


def update(conn, instance_id, **changes):
    changes = {k: (v or None) if k in NULLABLE else v for k, v in changes.items() if k in EDITABLE}
    if "public" in changes:
        changes["public"] = int(changes["public"])
    assignments = "".join(f"{name} = ?, " for name in changes)
    with write(conn):
        cursor = conn.execute(
            f"UPDATE instances SET {assignments}updated_at = ? WHERE instance_id = ?",
            (*changes.values(), now(), instance_id.lower()),
        )
        if "endpoint" in changes:  # a new endpoint is unknown until probed
            conn.execute("UPDATE instances SET status = 'offline' WHERE instance_id = ?", (instance_id.lower(),))
    if cursor.rowcount == 0:
        raise NotFound(f"no instance with id {instance_id!r}")
    return get(conn, instance_id)


def delete(conn, instance_id):
    if not valid_id(instance_id):
        raise NotFound(f"no instance with id {instance_id!r}")
    with write(conn):
        cursor = conn.execute("DELETE FROM instances WHERE instance_id = ?", (instance_id.lower(),))
    if cursor.rowcount == 0:
        raise NotFound(f"no instance with id {instance_id!r}")


def rotate_secret(conn, instance_id):
    if not valid_id(instance_id):
        raise NotFound(f"no instance with id {instance_id!r}")
    secret = new_secret()
    with write(conn):
        cursor = conn.execute(
            "UPDATE instances SET secret_sha256 = ?, updated_at = ? WHERE instance_id = ?",
            (secret_hash(secret), now(), instance_id.lower()),
        )
    if cursor.rowcount == 0:
        raise NotFound(f"no instance with id {instance_id!r}")
    return secret


def secret_matches(conn, instance_id, secret):
    """Whether ``secret`` is this instance's secret; False for unknown instances too."""
    if not valid_id(instance_id):
        return False
    row = conn.execute(
        "SELECT secret_sha256 FROM instances WHERE instance_id = ?", (instance_id.lower(),)
    ).fetchone()
    return row is not None and hmac.compare_digest(row["secret_sha256"], secret_hash(secret))


# -- status -------------------------------------------------------------------------------------------

def tunnel_online(conn, instance_id, connection_id):
    """A tunnel connected: online, owned by ``connection_id`` (a newer connection replaces an older one)."""
    stamp = now()
    with write(conn):
        conn.execute(
            "UPDATE instances SET status = 'online', connection_id = ?, last_seen_at = ? WHERE instance_id = ?",
            (connection_id, stamp, instance_id),
        )


def tunnel_seen(conn, instance_id, connection_id):
    with write(conn):
        conn.execute(
            "UPDATE instances SET last_seen_at = ? WHERE instance_id = ? AND connection_id = ?",
            (now(), instance_id, connection_id),
        )


def tunnel_offline(conn, instance_id, connection_id):
    """The connection ``connection_id`` ended: offline, unless a newer connection has taken over."""
    with write(conn):
        conn.execute(
            "UPDATE instances SET status = 'offline', last_seen_at = ? WHERE instance_id = ? AND connection_id = ?",
            (now(), instance_id, connection_id),
        )


def reset_tunnels(conn):
    """A worker starting holds no sockets: every tunnel is offline until its connector comes back."""
    with write(conn):
        conn.execute("UPDATE instances SET status = 'offline', connection_id = NULL WHERE mode = 'tunnel'")


def direct_instances(conn):
    return [dict(r) for r in conn.execute(
        "SELECT instance_id, endpoint, api_key, model, status FROM instances WHERE mode = 'direct'"
    )]


def record_probes(conn, results):
    """``results``: ``{instance_id: ok}``. Online ones get a fresh ``last_seen_at``."""
    stamp = now()
    with write(conn):
        for instance_id, ok in results.items():
            if ok:
                conn.execute(
                    "UPDATE instances SET status = 'online', last_seen_at = ? WHERE instance_id = ?",
                    (stamp, instance_id),
                )
            else:
                conn.execute("UPDATE instances SET status = 'offline' WHERE instance_id = ?", (instance_id,))


def take_lease(conn, name, holder, ttl_s):
    """Hold (or renew) the lease ``name`` for ``ttl_s`` seconds; False if another holder's is still valid."""
    stamp = time.time()
    with write(conn):
        conn.execute(
            "INSERT INTO registry_leases (name, holder, expires_at) VALUES (?, ?, ?)"
            " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at"
            " WHERE registry_leases.holder = excluded.holder OR registry_leases.expires_at < ?",
            (name, holder, stamp + ttl_s, stamp),
        )
        row = conn.execute("SELECT holder FROM registry_leases WHERE name = ?", (name,)).fetchone()
    return row is not None and row["holder"] == holder
