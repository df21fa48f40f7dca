#!/usr/bin/env bash
# Set up (idempotent) and run every test: lint, then pytest over test/.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
# shellcheck disable=SC1091
source "$ROOT/scripts/env.sh"
cd "$ROOT"
ruff check src test launch
python -m pytest test "$@"
