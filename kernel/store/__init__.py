"""The instance's SQLite store: roles and the L0 knowledge index.

Knows nothing of HTTP. One connection per request (or per CLI command); the database runs in WAL mode
so readers never wait for the writer, every write is one ``BEGIN IMMEDIATE`` transaction so concurrent
writers queue on the busy timeout instead of failing, and the schema is versioned with
``PRAGMA user_version`` and migrated when a worker starts.
"""

import sqlite3
from contextlib import contextmanager
from datetime import datetime, timezone

DB_NAME = "kernel.sqlite3"
BUSY_TIMEOUT_MS = 10_000

# Each entry moves the schema one version up; never edit one that has shipped, append a new one.
MIGRATIONS = [
    """
    CREATE TABLE roles (
        role_id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE COLLATE NOCASE,
        description TEXT NOT NULL DEFAULT '',
        system_prompt TEXT NOT NULL,
        enable_l0_retrieval INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE documents (
        document_id TEXT PRIMARY KEY,
        title TEXT NOT NULL,
        source TEXT,
        sha256 TEXT NOT NULL UNIQUE,
        size_bytes INTEGER NOT NULL,
        chunk_count INTEGER NOT NULL,
        content TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE chunks (
        chunk_id INTEGER PRIMARY KEY,
        document_id TEXT NOT NULL REFERENCES documents (document_id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        content TEXT NOT NULL,
        UNIQUE (document_id, seq)
    );
    CREATE VIRTUAL TABLE chunks_fts USING fts5 (
        content, content='chunks', content_rowid='chunk_id',
        tokenize='porter unicode61 remove_diacritics 2'
    );
    CREATE TRIGGER chunks_ai AFTER INSERT ON chunks BEGIN
        INSERT INTO chunks_fts (rowid, content) VALUES (new.chunk_id, new.content);
    END;
    CREATE TRIGGER chunks_ad AFTER DELETE ON chunks BEGIN
        INSERT INTO chunks_fts (chunks_fts, rowid, content) VALUES ('delete', old.chunk_id, old.content);
    END;
    """,
    # 2: at most one role is the instance's default persona (metadata.role_id "default_role").
    """
    ALTER TABLE roles ADD COLUMN is_default INTEGER NOT NULL DEFAULT 0;
    CREATE UNIQUE INDEX roles_one_default ON roles (is_default) WHERE is_default = 1;
    """,
    # 3: the registry (kernel.registry): instances, their status, and the lease that picks the prober.
    """
    CREATE TABLE instances (
        instance_id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        mode TEXT NOT NULL CHECK (mode IN ('direct', 'tunnel')),
        endpoint TEXT,
        api_key TEXT,
        model TEXT,
        secret_sha256 TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'offline' CHECK (status IN ('online', 'offline')),
        connection_id TEXT,
        last_seen_at TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE registry_leases (
        name TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        expires_at REAL NOT NULL
    );
    """,
    # 4: an instance open to chat without a chat key (when KERNEL_CHAT_KEYS is set).
    """
    ALTER TABLE instances ADD COLUMN public INTEGER NOT NULL DEFAULT 0;
    """,
]


class StoreError(Exception):
    """Base of the store's errors."""


class NotFound(StoreError, LookupError):
    """No row with that id."""


class Conflict(StoreError):
    """The change would break a uniqueness rule."""


class Invalid(StoreError, ValueError):
    """The data cannot be stored as given."""


class Busy(StoreError):
    """The database stayed locked by other writers for longer than the busy timeout."""


def now():
    """The current UTC time as ISO 8601 with milliseconds, e.g. ``2026-11-24T05:00:00.123Z``."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def connect(path):
    """Open a connection with the settings every connection needs."""
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


@contextmanager
def write(conn):
    """One write transaction, taken up front so concurrent writers wait their turn instead of failing."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        raise Busy("the database is busy; try again") from exc
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    try:
        conn.execute("COMMIT")
    except sqlite3.OperationalError as exc:
        conn.execute("ROLLBACK")
        raise Busy("the database is busy; try again") from exc


def migrate(conn):
    """Bring the schema to the newest version; safe when several workers start at once."""
    if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        conn.execute("PRAGMA journal_mode = WAL")
    with write(conn):
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            for statement in _statements(script):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")
    return len(MIGRATIONS)


def _statements(script):
    """Split a migration into statements (``executescript`` would commit our transaction)."""
    statement = ""
    for line in script.strip().splitlines():
        statement += line + "\n"
        if sqlite3.complete_statement(statement):
            yield statement.strip()
            statement = ""
    if statement.strip():
        raise ValueError(f"incomplete SQL statement in a migration: {statement!r}")
