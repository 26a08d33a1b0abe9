"""URL routes. Every route must have an entry in the role matrix (tests/test_role_matrix.py)."""

from django.contrib.auth.decorators import login_required
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from catalog.api import CatalogSearchView, FileVersionsView, PointBrowseView
from config.api import router
from inventory.api.views import AgentEnrolView, AgentHeartbeatView
from protection.api.agent import AgentChunksView, AgentJobsView, AgentRestoreView, AgentRunView
from restores.api.views import FileRestoreView

urlpatterns = [
    path("", include("core.urls")),
    path("", include("inventory.urls")),
    path("", include("protection.urls")),
    path("", include("catalog.urls")),
    path("", include("restores.urls")),
    path("api/agent/enrol/", AgentEnrolView.as_view(), name="agent-enrol"),
    path("api/agent/heartbeat/", AgentHeartbeatView.as_view(), name="agent-heartbeat"),
    path("api/agent/jobs/", AgentJobsView.as_view(), name="agent-jobs"),
    path("api/agent/runs/<int:pk>/chunks/", AgentChunksView.as_view(), name="agent-run-chunks"),
    path("api/agent/runs/<int:pk>/<slug:step>/", AgentRunView.as_view(), name="agent-run"),
    path("api/agent/restores/<int:pk>/<slug:step>/", AgentRestoreView.as_view(), name="agent-restore"),
    path("api/catalog/search/", CatalogSearchView.as_view(), name="catalog-search"),
    path("api/points/<int:pk>/browse/", PointBrowseView.as_view(), name="point-browse"),
    path("api/files/<int:pk>/versions/", FileVersionsView.as_view(), name="file-versions"),
    path("api/file-restores/", FileRestoreView.as_view(), name="file-restore"),
    path("api/", include((router.urls, "api"))),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # A page for people: anonymous visitors are sent to sign in rather than shown a bare 401.
    path(
        "api/docs/",
        login_required(SpectacularSwaggerSplitView.as_view(url_name="api-schema")),
        name="api-docs",
    ),
]
