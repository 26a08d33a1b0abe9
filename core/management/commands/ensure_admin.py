"""First backup admin if none exists; the password is printed once or comes from the environment."""

from __future__ import annotations

import secrets
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from config.env import Env
from core import services
from core.choices import Role
from core.models import User


class Command(BaseCommand):
    help = (
        "Create a backup admin when none exists (password from BULWARK_ADMIN_PASSWORD[_FILE] or generated)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default="admin")

    def handle(self, *args: Any, username: str, **options: Any) -> None:
        if User.objects.filter(role=Role.ADMIN, is_active=True).exists():
            self.stdout.write("A backup admin exists already; nothing to do.")
            return
        password = Env().secret("BULWARK_ADMIN_PASSWORD")
        generated = password is None
        if password is None:
            password = secrets.token_urlsafe(18)
        services.create_user(actor=None, username=username, role=Role.ADMIN, password=password)
        if generated:
            # Written to the terminal once and stored nowhere else: the only copy is the one shown here.
            self.stdout.write(
                self.style.WARNING(f"Created backup admin '{username}' with password: {password}\n")
                + "Store it now; it is not shown again. Change it with `manage.py changepassword`."
            )
        else:
            self.stdout.write(
                f"Created backup admin '{username}' with the password from BULWARK_ADMIN_PASSWORD."
            )
