#!/usr/bin/env bash
# Set up (idempotent) and run every test: lint, type check, then pytest over test/.
# Arguments go to pytest, e.g. `bash scripts/test.sh -m unit` for the fast tests only.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
# shellcheck disable=SC1091
source "$ROOT/scripts/env.sh"
cd "$ROOT"
ruff check src test launch benchmarks
bash scripts/typecheck.sh
python -m pytest test "$@"
