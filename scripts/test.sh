#!/usr/bin/env bash
# Set up and run the whole test suite, real servers included:
#   1. install redis-server, redis-cli and memcached from Debian when they are missing
#      (scripts/install-servers.sh; it stops the services Debian starts only on CI),
#   2. create .venv and install acacheorm with its test and dev extras,
#   3. run ruff (lint + format check), mypy --strict, and pytest (the servers are started by
#      the suite itself on free loopback ports and stopped at the end).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-servers.sh

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
