from django.urls import path

from restores import views

urlpatterns = [
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
