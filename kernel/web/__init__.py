"""The web page: ``GET /`` and its static files, served by the same server as the API.

No build step: ``static/`` holds plain ES modules, a stylesheet and vendored libraries. Every file is
addressed as ``/assets/<version>/<file>``, where ``<version>`` is a hash of the whole ``static/`` tree,
so modules that import each other by relative path stay on one version, files can be cached for a
year, and an upgrade changes every URL at once. The page itself is ``no-cache`` with an ETag, so a
browser always asks for the current one (and gets a 304 when nothing changed).

Each response from this blueprint carries a strict Content-Security-Policy (no inline script, no
``eval``, same-origin connections only), ``X-Content-Type-Options: nosniff`` and
``Referrer-Policy: no-referrer``.
"""

import hashlib
from pathlib import Path

from flask import Blueprint, Response, current_app, request, send_from_directory
from werkzeug.exceptions import NotFound

STATIC_DIR = Path(__file__).resolve().parent / "static"
ASSETS_PREFIX = "/assets"
VERSION_PLACEHOLDER = "__ASSETS__"
YEAR_S = 365 * 24 * 3600

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "manifest-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}

bp = Blueprint("web", __name__)


def tree_version(directory):
    """A short hash of every file's relative path and content under ``directory``."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(directory).rglob("*") if p.is_file()):
        digest.update(path.relative_to(directory).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


@bp.after_request
def security_headers(response):
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


@bp.get("/")
def index():
    page = current_app.extensions["kernel.web"]
    response = Response(page["index"], mimetype="text/html")
    response.set_etag(page["index_etag"])
    response.headers["Cache-Control"] = "no-cache"
    return response.make_conditional(request)


@bp.get(f"{ASSETS_PREFIX}/<version>/<path:filename>")
def asset(version, filename):
    if filename == "index.html":  # the page lives at /, with the version filled in
        raise NotFound()
    response = send_from_directory(STATIC_DIR, filename)  # with an ETag; answers If-None-Match with 304
    if version == current_app.extensions["kernel.web"]["version"]:
        response.headers["Cache-Control"] = f"public, max-age={YEAR_S}, immutable"
    else:  # an old page asking for its old version after an upgrade: today's file, revalidated each time
        response.headers["Cache-Control"] = "no-cache"
    return response


def init_app(app):
    version = tree_version(STATIC_DIR)
    template = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    index_html = template.replace(VERSION_PLACEHOLDER, f"{ASSETS_PREFIX}/{version}").encode()
    app.extensions["kernel.web"] = {
        "version": version,
        "index": index_html,
        "index_etag": hashlib.sha256(index_html).hexdigest()[:16],
    }
    app.register_blueprint(bp)
