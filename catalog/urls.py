from django.urls import path

from catalog import views

urlpatterns = [
    path("files/", views.FileSearchView.as_view(), name="file-search"),
    path("files/<int:pk>/history/", views.FileHistoryView.as_view(), name="file-history"),
    path("restores/points/<int:pk>/files/", views.PointFilesView.as_view(), name="point-files"),
]
