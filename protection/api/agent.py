"""The agent's job endpoints: backups it runs (source-side dedup) and file restores it writes on its host.

Authenticated by the agent key only (no session, no CSRF), always scoped to the agent's own machine; over HTTPS
unless the embedded development mode allows plain HTTP.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import exceptions
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.streaming import streaming
from engine.errors import EngineError
from inventory import services as inventory_services
from inventory.api.views import AgentKeyAuthentication
from inventory.models import Agent
from protection import agent_runs
from protection.agent_runs import AgentJobError
from restores import services as restores


def _agent(request: Request) -> Agent:
    if not isinstance(request.auth, Agent):
        raise exceptions.NotAuthenticated("An agent key is required.")
    if not request.is_secure() and not inventory_services.insecure_agents_allowed():
        raise exceptions.PermissionDenied("Agents talk to the console over HTTPS only.")
    return request.auth


def _refused(error: AgentJobError) -> Response:
    return Response({"detail": str(error), "code": error.code, **error.extra}, status=error.status)


class AgentView(APIView):
    authentication_classes = [AgentKeyAuthentication]
    permission_classes = [AllowAny]


class AgentJobsView(AgentView):
    """Queued backups and file restores for the agent's machine."""

    @extend_schema(responses={200: dict})
    def get(self, request: Request) -> Response:
        return Response({"jobs": agent_runs.jobs_for(_agent(request))})


class AgentRunView(AgentView):
    """POST runs/<id>/<step>/ with step one of start, missing, progress, commit, finish (JSON)."""

    @extend_schema(request=dict, responses={200: dict})
    def post(self, request: Request, pk: int, step: str) -> Response:
        agent = _agent(request)
        data: dict[str, Any] = request.data if isinstance(request.data, dict) else {}
        try:
            if step == "start":
                return Response(agent_runs.start(agent, pk))
            if step == "missing":
                return Response({"missing": agent_runs.missing(agent, pk, data.get("ids"))})
            if step == "progress":
                agent_runs.progress(agent, pk, data)
                return Response({"ok": True})
            if step == "commit":
                point = agent_runs.commit(agent, pk, data)
                return Response({"point": point.pk, "snapshot": point.snapshot_id})
            if step == "finish":
                run = agent_runs.finish(
                    agent, pk, str(data.get("error") or "")[:5000], str(data.get("warning") or "")
                )
                return Response({"state": run.state})
        except AgentJobError as error:
            return _refused(error)
        except EngineError as error:
            return Response({"detail": f"repository: {error}", "code": "storage"}, status=503)
        raise exceptions.NotFound(f"unknown step {step!r}")


class AgentChunksView(AgentView):
    """POST runs/<id>/chunks/: a batch of chunk frames (application/octet-stream)."""

    parser_classes: list[Any] = []

    @extend_schema(request=bytes, responses={200: dict})
    def post(self, request: Request, pk: int) -> Response:
        agent = _agent(request)
        try:
            result = agent_runs.store_chunks(agent, pk, request.stream)  # type: ignore[arg-type]
        except AgentJobError as error:
            return _refused(error)
        except EngineError as error:
            return Response({"detail": f"repository: {error}", "code": "storage"}, status=503)
        return Response(
            {
                "received": result.received,
                "stored": result.stored,
                "new_bytes": result.new_bytes,
                "stored_bytes": result.stored_bytes,
            }
        )


class AgentRestoreView(AgentView):
    """POST restores/<id>/start/ and finish/; GET restores/<id>/archive/ streams the files as tar."""

    @extend_schema(request=dict, responses={200: dict})
    def post(self, request: Request, pk: int, step: str) -> Response:
        agent = _agent(request)
        data: dict[str, Any] = request.data if isinstance(request.data, dict) else {}
        try:
            if step == "start":
                return Response(restores.start_agent_restore(agent, pk))
            if step == "finish":
                result = data.get("result") if isinstance(data.get("result"), dict) else {}
                restore = restores.finish_agent_restore(
                    agent, pk, error=str(data.get("error") or ""), result=result
                )
                return Response({"state": restore.state})
        except restores.RestoreRefused as error:
            return Response({"detail": str(error), "code": "refused"}, status=409)
        raise exceptions.NotFound(f"unknown step {step!r}")

    @extend_schema(responses={200: bytes})
    def get(self, request: Request, pk: int, step: str) -> Any:
        agent = _agent(request)
        if step != "archive":
            raise exceptions.NotFound(f"unknown step {step!r}")
        try:
            pieces = restores.agent_archive(agent, pk)
        except restores.RestoreRefused as error:
            return Response({"detail": str(error), "code": "refused"}, status=409)
        return streaming(request, pieces)
