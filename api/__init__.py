"""The read side: FastAPI over the store and the running gateway's state."""

from api.app import create_app

__all__ = ["create_app"]
