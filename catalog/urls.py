from django.urls import path

from catalog import views

urlpatterns = [
    path("restores/points/<int:pk>/files/", views.PointFilesView.as_view(), name="point-files"),
]
