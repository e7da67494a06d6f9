#!/usr/bin/env bash
# Set up and run the whole test suite, real servers included:
#   1. install redis-server, redis-cli and memcached from Debian when they are missing,
#   2. create .venv and install acacheorm with its test and dev extras,
#   3. run ruff (lint + format check), mypy --strict, and pytest (the servers are started by
#      the suite itself on free loopback ports and stopped at the end).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
command -v memcached >/dev/null 2>&1 || need+=(memcached)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]} (Debian packages)"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # Debian starts the packaged services; the suite runs its own on free ports.
  $SUDO systemctl disable --now redis-server memcached >/dev/null 2>&1 || true
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[dev]'

echo "== ruff"
.venv/bin/ruff check src tests benchmarks examples
.venv/bin/ruff format --check src tests benchmarks examples
echo "== mypy --strict"
.venv/bin/mypy
.venv/bin/mypy --strict tests/test_typing.py
echo "== pytest"
.venv/bin/pytest "$@"
