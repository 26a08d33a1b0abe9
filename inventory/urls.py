from django.urls import path

from inventory import views

urlpatterns = [
    path("machines/", views.MachineListView.as_view(), name="machine-list"),
    path("machines/<int:pk>/", views.MachineDetailView.as_view(), name="machine-detail"),
    path("groups/", views.MachineGroupListView.as_view(), name="group-list"),
    path("groups/new/", views.MachineGroupCreateView.as_view(), name="group-create"),
    path("groups/<int:pk>/", views.MachineGroupUpdateView.as_view(), name="group-edit"),
]
