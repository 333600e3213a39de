"""The store's place in the app: a connection per request on ``g``, migrations when a worker starts."""

from pathlib import Path

import gevent
from flask import current_app, g

from . import store


def get_db():
    """This request's connection, opened on first use and closed at teardown."""
    if "db" not in g:
        g.db = store.connect(current_app.extensions["kernel.db_path"])
    return g.db


def offload(function, *args, **kwargs):
    """Run a store call on a real thread and wait for it, so the worker's event loop keeps serving.

    For writes: they may chunk and index megabytes, or wait for another worker's write lock, and
    SQLite releases the GIL while it works. The connection is used by one thread at a time.
    """
    outcome = gevent.get_hub().threadpool.apply(_outcome, (function, args, kwargs))
    if isinstance(outcome, _Raised):
        raise outcome.exc
    return outcome


class _Raised:
    __slots__ = ("exc",)

    def __init__(self, exc):
        self.exc = exc


def _outcome(function, args, kwargs):
    """The function's result, or its exception as a value: gevent's threadpool would print the traceback of
    every exception raised in it (a 404 or a 409 is no news for the log), then raise it here anyway."""
    try:
        return function(*args, **kwargs)
    except Exception as exc:
        return _Raised(exc)


def close_db(exc=None):
    db = g.pop("db", None)
    if db is not None:
        db.close()


def init_app(app):
    data_dir = Path(app.config["KERNEL_DATA_DIR"])
    data_dir.mkdir(parents=True, exist_ok=True)
    path = str(data_dir / store.DB_NAME)
    conn = store.connect(path)
    try:
        store.migrate(conn)
    finally:
        conn.close()
    app.extensions["kernel.db_path"] = path
    app.teardown_appcontext(close_db)
