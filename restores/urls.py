from django.urls import path

from restores import file_views, views

urlpatterns = [
    path("restores/", file_views.RestoreListView.as_view(), name="restore-list"),
    path("restores/new/", file_views.FileRestoreWizardView.as_view(), name="file-restore-wizard"),
    path("restores/<int:pk>/decide/", file_views.RestoreDecisionView.as_view(), name="restore-decide"),
    path("restores/<int:pk>/download/", file_views.RestoreDownloadView.as_view(), name="restore-download"),
    path("restores/files/compare/", file_views.FileDiffView.as_view(), name="file-diff"),
    path("groups/<int:pk>/restore-rule/", file_views.RestoreRuleEditView.as_view(), name="restore-rule-edit"),
    path("machines/<int:pk>/restore/", views.MachineRestoreView.as_view(), name="machine-restore"),
    path("restores/<int:pk>/", views.RestoreDetailView.as_view(), name="restore-detail"),
    path("restores/files/<int:pk>/download/", views.FileDownloadView.as_view(), name="file-download"),
    path("restores/points/<int:pk>/download/", views.PointDownloadView.as_view(), name="point-download"),
    path(
        "restores/points/<int:pk>/restore-files/",
        views.PointRestoreFilesView.as_view(),
        name="point-restore-files",
    ),
]
