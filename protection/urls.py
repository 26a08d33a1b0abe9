from django.urls import path

from protection import views

urlpatterns = [
    path("policies/", views.PolicyListView.as_view(), name="policy-list"),
    path("policies/new/", views.PolicyFormView.as_view(), name="policy-create"),
    path("policies/<int:pk>/", views.PolicyFormView.as_view(), name="policy-edit"),
    path("policies/<int:pk>/copies/", views.PolicyCopyTargetView.as_view(), name="policy-copies"),
    path("repositories/", views.RepositoryListView.as_view(), name="repository-list"),
    path("rules/", views.RuleListView.as_view(), name="rule-list"),
    path("rules/new/", views.RuleFormView.as_view(), name="rule-create"),
    path("rules/preview/", views.RulePreviewView.as_view(), name="rule-preview"),
    path("rules/<int:pk>/", views.RuleFormView.as_view(), name="rule-edit"),
    path("rules/<int:pk>/move/", views.RuleMoveView.as_view(), name="rule-move"),
    path("rules/<int:pk>/delete/", views.RuleDeleteView.as_view(), name="rule-delete"),
    path("alerts/", views.AlertListView.as_view(), name="alert-list"),
    path("alerts/<int:pk>/acknowledge/", views.AlertAcknowledgeView.as_view(), name="alert-acknowledge"),
    path("machines/<int:pk>/assign/", views.MachineAssignView.as_view(), name="machine-assign"),
    path("machines/<int:pk>/backup/", views.MachineBackupView.as_view(), name="machine-backup"),
    path("runs/", views.RunListView.as_view(), name="run-list"),
    path("policies/<int:pk>/backup/", views.PolicyBackupView.as_view(), name="policy-backup"),
    path("runs/cancel/", views.RunBulkCancelView.as_view(), name="run-bulk-cancel"),
    path("runs/<int:pk>/", views.RunDetailView.as_view(), name="run-detail"),
    path("runs/<int:pk>/status/", views.RunStatusView.as_view(), name="run-status"),
    path("runs/<int:pk>/cancel/", views.RunCancelView.as_view(), name="run-cancel"),
]
