from django.urls import path

from core import views

urlpatterns = [
    path("", views.DashboardView.as_view(), name="dashboard"),
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", views.LogoutView.as_view(), name="logout"),
    path("healthz", views.health, name="health"),
    path("audit/", views.AuditLogView.as_view(), name="audit-log"),
    path("users/", views.UserListView.as_view(), name="user-list"),
    path("users/new/", views.UserCreateView.as_view(), name="user-create"),
    path("users/<int:pk>/", views.UserUpdateView.as_view(), name="user-edit"),
]
