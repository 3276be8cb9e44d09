"""The HTTP API: FastAPI app factory, routes and error handlers."""

from microtopic.api.app import create_app

__all__ = ["create_app"]
