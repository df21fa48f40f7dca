#!/usr/bin/env bash
# Type-check every workspace package under src/ with mypy (settings in pyproject.toml's [tool.mypy]).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
packages=()
for package_xml in src/*/*/package.xml; do
    dir="$(dirname "$package_xml")"
    name="$(basename "$dir")"
    [ -d "$dir/$name" ] && packages+=(-p "$name")
done
exec python -m mypy "${packages[@]}"
