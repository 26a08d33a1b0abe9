from django.urls import path

from restores import views

urlpatterns = [
    path("machines/<int:pk>/restore/", views.MachineRestoreView.as_view(), name="machine-restore"),
    path("restores/<int:pk>/", views.RestoreDetailView.as_view(), name="restore-detail"),
]
