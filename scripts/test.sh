#!/usr/bin/env bash
# Run the test suite in the project venv. Extra args are passed to pytest.
set -euo pipefail

# shellcheck source=scripts/_venv.sh
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
divrl_ensure_venv test,hf
cd "$ROOT"

rc=0
"$PY" -m pytest -n 2 -q tests "$@" || rc=$?
if [ "$rc" -eq 5 ]; then
    echo "divrl: ERROR: pytest collected no tests (exit code 5)" >&2
    exit 1
fi
exit "$rc"
