"""Settings helpers fail loudly on values they cannot use."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from config.env import Env, persistent_secret

ROOT = Path(__file__).resolve().parents[2]


def test_booleans_integers_lists_and_urls() -> None:
    env = Env({"A": "yes", "B": "0", "N": "8", "L": "a, b,,c", "U": "redis://127.0.0.1:6379/0", "E": "  "})
    assert env.bool("A", default=False) is True
    assert env.bool("B", default=True) is False
    assert env.bool("E", default=True) is True  # blank means unset
    assert env.int("N", 1, minimum=1, maximum=64) == 8
    assert env.list("L", []) == ["a", "b", "c"]
    assert env.url("U", None, schemes=("redis",)) == "redis://127.0.0.1:6379/0"


@pytest.mark.parametrize(
    ("environ", "call", "message"),
    [
        ({"X": "maybe"}, lambda env: env.bool("X", default=False), "X='maybe' is not a boolean"),
        ({"X": "ten"}, lambda env: env.int("X", 1), "X='ten' is not an integer"),
        ({"X": "0"}, lambda env: env.int("X", 1, minimum=1), "below the minimum 1"),
        ({"X": "mysql://db"}, lambda env: env.url("X", None, schemes=("postgres",)), "schemes postgres"),
        ({"S": "a", "S_FILE": "/tmp/x"}, lambda env: env.secret("S"), "set S or S_FILE, not both"),
        ({"S_FILE": "/nonexistent/secret"}, lambda env: env.secret("S"), "cannot be read"),
    ],
)
def test_bad_values_name_the_variable(environ, call, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ImproperlyConfigured, match=message):
        call(Env(environ))


def test_secret_from_file(tmp_path: Path) -> None:
    secret = tmp_path / "key"
    secret.write_text("s3cr3t\n")
    assert Env({"S_FILE": str(secret)}).secret("S") == "s3cr3t"
    secret.write_text("")
    with pytest.raises(ImproperlyConfigured, match="is empty"):
        Env({"S_FILE": str(secret)}).secret("S")


def test_persistent_secret_is_created_once_with_private_mode(tmp_path: Path) -> None:
    path = tmp_path / "data" / "secret_key"
    first = persistent_secret(path)
    assert persistent_secret(path) == first
    assert path.stat().st_mode & 0o777 == 0o600


def _manage(*args: str, **environ: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(environ)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_a_bad_setting_stops_start_up_with_a_clear_message(tmp_path: Path) -> None:
    result = _manage("check", BULWARK_DATA_DIR=str(tmp_path), BULWARK_CREDENTIAL_KEYS="not-a-key")
    assert result.returncode != 0
    assert "BULWARK_CREDENTIAL_KEYS holds a value that is not a Fernet key" in result.stderr


def test_production_settings_pass_the_deploy_check(tmp_path: Path) -> None:
    from cryptography.fernet import Fernet

    result = _manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        BULWARK_DATA_DIR=str(tmp_path),
        SECRET_KEY="x" * 20 + "-production-secret-key-with-enough-entropy-0123456789",
        BULWARK_CREDENTIAL_KEYS=Fernet.generate_key().decode(),
        ALLOWED_HOSTS="bulwark.example.com",
        BULWARK_TLS="true",
        DEBUG="false",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout
