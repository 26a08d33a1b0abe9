"""Re-encrypt stored credentials with the first key of BULWARK_CREDENTIAL_KEYS."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from core import services


class Command(BaseCommand):
    help = "Re-encrypt every stored credential with the current (first) credential key."

    def handle(self, *args: Any, **options: Any) -> None:
        count = services.rotate_credentials(actor=None)
        self.stdout.write(f"Re-encrypted {count} credential(s) with the current key.")
