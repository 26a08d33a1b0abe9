"""The embedded install runs Celery worker threads in the web process over the in-memory transport."""

from __future__ import annotations

from core.tasks import ping
from core.worker import EmbeddedWorker


def test_embedded_worker_consumes_tasks_sent_in_process() -> None:
    worker = EmbeddedWorker(concurrency=2)
    worker.start()
    try:
        # The worker shares this process, so Celery thinks every caller is a task; the console itself never
        # waits on results, the test does (disable_sync_subtasks=False).
        results = [ping.delay(f"hello-{n}") for n in range(5)]
        assert [result.get(timeout=20, disable_sync_subtasks=False) for result in results] == [
            f"hello-{n}" for n in range(5)
        ]
    finally:
        worker.stop()
    assert not worker.thread.is_alive()
