"""Streamed responses that stay streamed under ASGI (Django reads a plain iterator into memory there)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.http import StreamingHttpResponse

GATHER_BYTES = 1024 * 1024


def streaming(request: Any, pieces: Iterator[bytes], **headers: str) -> StreamingHttpResponse:
    """A streamed response that stays streamed under ASGI (a plain iterator would be read into memory)."""
    content: Any = pieces
    if isinstance(getattr(request, "_request", request), ASGIRequest):

        def gather() -> bytes | None:
            """Up to GATHER_BYTES of pieces per hop to the sync thread (a tar of small files is mostly pieces of
            a few hundred bytes: one hop each cost more than the reading)."""
            parts: list[bytes] = []
            size = 0
            for piece in pieces:
                parts.append(piece)
                size += len(piece)
                if size >= GATHER_BYTES:
                    break
            return b"".join(parts) if parts else None

        next_piece = sync_to_async(gather, thread_sensitive=True)

        async def pump() -> AsyncIterator[bytes]:
            while (piece := await next_piece()) is not None:
                yield piece

        content = pump()
    response = StreamingHttpResponse(content, content_type=headers.pop("content_type", "application/x-tar"))
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return response
