"""`uvicorn sprockets_cache.app:app` keeps working: the app lives in http/app.py."""

from sprockets_cache.http.app import app, create_app

__all__ = ["app", "create_app"]
