"""Kernel Chat: a small, self-hostable, OpenAI-compatible chat server."""

__version__ = "0.1.0"


def create_app(config=None):
    """Build the Flask app. ``config`` overrides settings read from the ``KERNEL_*`` environment."""
    from .factory import create_app as _create_app

    return _create_app(config)
