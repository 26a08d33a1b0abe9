"""Project configuration: settings, ASGI application, Celery application, URL and WebSocket routes."""

from config.celery import app as celery_app

__all__ = ["celery_app"]
