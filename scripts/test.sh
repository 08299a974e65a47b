#!/usr/bin/env bash
# Set up the environment and run the whole test suite, then the type and lint checks.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

.venv/bin/python -m pytest -q "$@"
.venv/bin/mypy
.venv/bin/ruff check src tests bench
