from django.urls import path

from inventory import views

urlpatterns = [
    path("machines/", views.MachineListView.as_view(), name="machine-list"),
    path("machines/<int:pk>/", views.MachineDetailView.as_view(), name="machine-detail"),
    path("machines/bulk/", views.MachineBulkView.as_view(), name="machine-bulk"),
    path("groups/", views.MachineGroupListView.as_view(), name="group-list"),
    path("groups/new/", views.MachineGroupCreateView.as_view(), name="group-create"),
    path("groups/<int:pk>/", views.MachineGroupUpdateView.as_view(), name="group-edit"),
    path("sources/", views.SourceListView.as_view(), name="source-list"),
    path("sources/try/", views.SourceTryView.as_view(), name="source-try"),
    path("sources/new/", views.SourceCreateView.as_view(), name="source-create"),
    path("sources/<int:pk>/", views.SourceDetailView.as_view(), name="source-detail"),
    path("sources/<int:pk>/edit/", views.SourceUpdateView.as_view(), name="source-edit"),
    path("sources/<int:pk>/test/", views.SourceTestView.as_view(), name="source-test"),
    path("sources/<int:pk>/discover/", views.SourceDiscoverView.as_view(), name="source-discover"),
    path("agents/", views.AgentListView.as_view(), name="agent-list"),
]
