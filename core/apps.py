from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "core"
    verbose_name = "Core"

    def ready(self) -> None:
        from core import (
            schema,  # noqa: F401  (describes token authentication in the OpenAPI schema)
            signals,  # noqa: F401  (connects the login/logout audit receivers)
        )
