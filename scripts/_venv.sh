# shellcheck shell=bash
# Sourced helper: ensures $ROOT/.venv exists with divrl installed (editable).
# Usage:  source scripts/_venv.sh; divrl_ensure_venv "test"   # or "" for no extras
# Exports ROOT, VENV and PY. Safe under `set -euo pipefail`.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
export ROOT VENV

divrl_ensure_venv() {
    local extras="${1-}"
    # One stamp per extras set, so alternating run.sh and test.sh stays fast.
    local stamp_file="$VENV/.divrl-stamp-${extras:-base}"
    local stamp current=""

    if [ ! -x "$VENV/bin/python" ]; then
        if ! python3 -m venv "$VENV"; then
            echo "divrl: ERROR: could not create virtualenv at $VENV with 'python3 -m venv'" >&2
            echo "divrl: (on Debian/Ubuntu you may need the python3-venv package)" >&2
            return 1
        fi
    fi

    stamp="$( { sha256sum "$ROOT/setup.py" | cut -d' ' -f1; printf 'extras=%s\n' "$extras"; } | sha256sum | cut -d' ' -f1)"
    if [ -f "$stamp_file" ]; then
        current="$(cat "$stamp_file")"
    fi

    if [ "$stamp" != "$current" ]; then
        echo "divrl: installing dependencies into .venv (first run takes a few minutes)" >&2
        local target="$ROOT"
        if [ -n "$extras" ]; then
            target="$ROOT[$extras]"
        fi
        "$VENV/bin/python" -m pip install -q --upgrade pip
        "$VENV/bin/python" -m pip install -q -e "$target"
        printf '%s\n' "$stamp" > "$stamp_file"
    fi

    PY="$VENV/bin/python"
    export PY
}
