#!/usr/bin/env bash
# Main job: run scripts/demo.py in the project venv. Args are passed through.
set -euo pipefail

# shellcheck source=scripts/_venv.sh
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
divrl_ensure_venv ""
cd "$ROOT"

exec "$PY" scripts/demo.py "$@"
