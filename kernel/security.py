"""What keeps browsers and the internet from being turned against a person's own instance.

* ``Host`` must be a loopback name, an IP literal, or a name in ``KERNEL_ALLOWED_HOSTS``: a page on any
  website that rebinds its own DNS name to 127.0.0.1 (DNS rebinding) is refused with 403.
* Request bodies must be JSON (``application/json``), or multipart where a route says it takes uploads:
  a cross-site ``text/plain`` or form POST, which a browser sends without asking, is refused with 415.
* CORS stays off unless ``KERNEL_CORS_ORIGINS`` names origins.
* ``X-Forwarded-For`` and ``X-Forwarded-Proto`` are believed only from ``KERNEL_TRUSTED_PROXIES`` proxies
  in front (werkzeug's ProxyFix); by default none, so a client cannot forge its address.
"""

import ipaddress

from flask import current_app, request
from werkzeug.middleware.proxy_fix import ProxyFix

from .errors import ApiError

LOOPBACK_NAMES = ("localhost", ".localhost")
BODY_METHODS = frozenset(("POST", "PUT", "PATCH"))


def accepts_multipart(view):
    """Mark a view as taking ``multipart/form-data`` uploads besides JSON."""
    view.accepts_multipart = True
    return view


def host_allowed(host, allowed):
    """Whether ``host`` (the Host header, port and all) is one the server answers to."""
    name = host.strip().lower()
    if name.startswith("["):  # [::1]:8002
        name = name[1:].partition("]")[0]
    elif name.count(":") == 1:
        name = name.partition(":")[0]
    name = name.rstrip(".")
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        pass
    for entry in allowed:
        if entry == "*" or name == entry or (entry.startswith(".") and (name.endswith(entry) or name == entry[1:])):
            return True
    return False


def check_host():
    host = request.headers.get("Host")
    if host is None or host_allowed(host, current_app.extensions["kernel.allowed_hosts"]):
        return
    raise ApiError(
        403,
        f"Host {host!r} is not one this server answers to; add it to KERNEL_ALLOWED_HOSTS (comma-separated names, "
        f"'.example.com' for its subdomains)",
        code="host_not_allowed",
    )


def check_content_type():
    if request.method not in BODY_METHODS:
        return
    if not request.content_length and "chunked" not in request.headers.get("Transfer-Encoding", "").lower():
        return
    mimetype = request.mimetype
    if mimetype == "application/json":
        return
    view = current_app.view_functions.get(request.endpoint)
    takes_uploads = getattr(view, "accepts_multipart", False)
    if mimetype == "multipart/form-data" and takes_uploads:
        return
    expected = "application/json" + (" or multipart/form-data" if takes_uploads else "")
    raise ApiError(415, f"Content-Type {mimetype or '(none)'!r} is not accepted here; send {expected}",
                   code="unsupported_media_type")


def _names(value):
    return [name.strip().lower() for name in value.split(",") if name.strip()]


def init_app(app):
    app.extensions["kernel.allowed_hosts"] = (*LOOPBACK_NAMES, *_names(app.config["KERNEL_ALLOWED_HOSTS"]))
    app.before_request(check_host)
    app.before_request(check_content_type)
    proxies = app.config["KERNEL_TRUSTED_PROXIES"]
    if proxies:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies)
    origins = _names(app.config["KERNEL_CORS_ORIGINS"])
    if origins:
        from flask_cors import CORS

        CORS(app, origins=origins, allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
             expose_headers=["X-Request-ID", "Retry-After"], max_age=600)
