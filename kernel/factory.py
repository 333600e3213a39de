"""The app factory: wires configuration, logging, errors, the backend and the blueprints together."""

import logging
import secrets

import click

from flask import Flask, g, request

from . import auth, backends, chat_api, cli, db, documents_api, errors, health, requestlog, roles_api, security, shutdown
from . import config as settings
from . import metrics, openapi, registry, web

log = logging.getLogger("kernel")

REQUEST_ID_HEADER = "X-Request-ID"


def _setup_logging(app):
    gunicorn_logger = logging.getLogger("gunicorn.error")
    if gunicorn_logger.handlers:
        log.handlers = gunicorn_logger.handlers
        log.setLevel(gunicorn_logger.level)
    elif not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.propagate = not gunicorn_logger.handlers


def _request_ids(app):
    @app.before_request
    def assign_request_id():
        incoming = request.headers.get(REQUEST_ID_HEADER, "")
        ok = 0 < len(incoming) <= 128 and incoming.isascii() and incoming.isprintable()
        g.request_id = incoming if ok else "req_" + secrets.token_hex(16)
        request.environ[requestlog.REQUEST_ID] = g.request_id
        if request.url_rule is not None:
            request.environ[requestlog.ROUTE] = request.url_rule.rule

    @app.after_request
    def send_request_id(response):
        response.headers[REQUEST_ID_HEADER] = g.get("request_id") or "req_" + secrets.token_hex(16)
        return response


def create_app(config=None):
    app = Flask(__name__, static_folder=None)  # the web page serves its own files (kernel/web)
    app.config.update(settings.from_environ())
    app.config.update(config or {})
    app.config["MAX_CONTENT_LENGTH"] = app.config["KERNEL_MAX_BODY_BYTES"]
    app.json.sort_keys = False
    app.json.ensure_ascii = False
    _setup_logging(app)

    # A server proves its backend at start (a local model decodes, see kernel/backends/local.py); a Flask
    # command (roles, documents, connect…) needs no model, so there it loads on first use, if ever.
    if click.get_current_context(silent=True) is None:
        try:
            backends.loaded(app.extensions, app.config)
        except (backends.BackendNotFound, backends.BackendBroken) as exc:
            log.critical("%s", exc)  # one clear line in the server log, above gunicorn's traceback
            raise

    errors.init_app(app)
    requestlog.init_app(app)
    _request_ids(app)
    security.init_app(app)
    shutdown.init_app(app)
    db.init_app(app)
    auth.init_app(app)
    chat_api.init_app(app)
    roles_api.init_app(app)
    documents_api.init_app(app)
    health.init_app(app)
    web.init_app(app)
    registry.init_app(app)
    metrics.init_app(app)
    openapi.init_app(app)
    cli.init_app(app)
    return app
