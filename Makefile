# Bulwark: `make run` serves the console with embedded defaults; `make test` runs every check and test.
SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
PY := $(VENV)/bin/python
export UV_PROJECT_ENVIRONMENT := $(VENV)
export UV_PYTHON_DOWNLOADS := never
export UV_PYTHON := $(PYTHON)
export SSL_CERT_FILE ?= /etc/ssl/certs/ca-certificates.crt

.PHONY: run test test-crash-long test-model-long install install-dev migrate lint check-deploy browser-deps peer-deps clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet uv==$(UV_VERSION)

install: $(UV)
	$(UV) sync --frozen --no-dev --inexact --quiet

install-dev: $(UV)
	$(UV) sync --frozen --quiet

migrate: install
	$(PY) manage.py migrate --noinput

run: migrate
	$(PY) manage.py ensure_admin
	$(PY) manage.py serve --host $${HOST:-127.0.0.1} --port $${PORT:-8000}

# Debian's Chromium for the browser tests (never a downloaded browser build).
browser-deps:
	@command -v chromium >/dev/null || { \
	  echo "Installing Debian's chromium for the browser tests"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium fonts-dejavu-core >/dev/null; }

# Debian packages the real test peers need (Go and govmomi's sources for vcsim; partitioning and mkfs tools that
# build the disk images the catalog walks, without mounting anything), and the vcsim build.
PEER_PACKAGES := golang-go golang-github-vmware-govmomi-dev samba qemu-utils fdisk xfsprogs ntfs-3g dosfstools mtools btrfs-progs e2fsprogs restic
peer-deps:
	@missing=""; for p in $(PEER_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "Installing test peers:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; fi
	sh tests/peer_tools/vcsim/build.sh var/peers/vcsim

lint: install-dev
	$(VENV)/bin/ruff check --output-format concise .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy
	$(PY) manage.py makemigrations --check --dry-run
	$(PY) manage.py check --fail-level WARNING

test: install-dev browser-deps peer-deps lint
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# The engine's crash harness at 500 kill points (CI runs 50).
test-crash-long: install-dev
	BULWARK_CRASH_POINTS=500 $(VENV)/bin/pytest tests/engine/test_crash.py --timeout 3600

# The engine's model-based test with more seeds and steps (make test runs 3 seeds of 120 steps).
test-model-long: install-dev
	BULWARK_MODEL_SEEDS=$$(seq -s, 1 24) BULWARK_MODEL_STEPS=400 $(VENV)/bin/pytest tests/engine/test_model.py --timeout 3600

# Production settings: explicit keys, TLS, real host names. Must pass with no warning.
check-deploy: install
	SECRET_KEY="$$($(PY) -c 'import secrets; print(secrets.token_urlsafe(64))')" \
	BULWARK_CREDENTIAL_KEYS="$$($(PY) -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')" \
	ALLOWED_HOSTS=bulwark.example.com BULWARK_TLS=true DEBUG=false \
	BULWARK_DATA_DIR="$$(mktemp -d)" \
	$(PY) manage.py check --deploy --fail-level WARNING

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .mypy_cache .ruff_cache
