"""WebSocket routes. Every route must have an entry in the role matrix (tests/test_role_matrix.py)."""

from django.urls import path

from core.consumers import EventsConsumer

websocket_urlpatterns = [
    path("ws/events/", EventsConsumer.as_asgi(), name="ws-events"),
]
