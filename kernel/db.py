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
    return gevent.get_hub().threadpool.apply(function, args, kwargs)


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
