#!/usr/bin/env bash
# Main job: the quickstart (pre-train a tiny Countdown base, run GRPO and
# GRPO + unlikeliness reward, print the table, save the plot) in the project
# venv. Args are passed to scripts/quickstart.py (e.g. --steps=10).
set -euo pipefail

# shellcheck source=scripts/_venv.sh
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
divrl_ensure_venv ""
cd "$ROOT"

exec "$PY" -m scripts.quickstart "$@"
