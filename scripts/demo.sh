#!/usr/bin/env bash
# Set up (idempotent) and run the whole pipeline on the simulated Koch:
# record expert demonstrations -> convert to LeRobot -> train ACT -> deploy and evaluate.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
# shellcheck disable=SC1091
source "$ROOT/scripts/env.sh"
cd "$ROOT"
exec "$ROOT/install/koch_bringup/lib/koch_bringup/demo" "$@"
