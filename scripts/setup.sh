#!/usr/bin/env bash
# One set-up step for a fresh machine, idempotent: Debian's ffmpeg libraries, a virtual
# environment (with system site-packages, so a sourced ROS 2 Humble/Jazzy is used where
# present), the Python dependencies at the versions pinned in constraints.txt (scripts/lock.sh
# regenerates it), the ROS 2 wheels only when rclpy is missing, and a colcon build of the
# workspace. Re-running reuses everything that is already there.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${KOCH_VENV:-$ROOT/.venv}"
cd "$ROOT"

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

# Debian packages: ffmpeg (LeRobot's video encoding/decoding) and Mesa's EGL with its software
# rasteriser, on which MuJoCo renders the simulated cameras headless (MUJOCO_GL=egl, no GPU).
APT_PACKAGES=(ffmpeg libegl1 libegl-mesa0 libgl1-mesa-dri)
if ! ldconfig -p 2>/dev/null | grep -q libavcodec.so || ! command -v ffmpeg >/dev/null \
        || ! ldconfig -p 2>/dev/null | grep -q libEGL_mesa.so; then
    say "installing Debian's ${APT_PACKAGES[*]}"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${APT_PACKAGES[@]}" >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
    say "creating virtual environment $VENV"
    python3 -m venv --system-site-packages "$VENV"
fi
# shellcheck disable=SC1091
source "$VENV/bin/activate"

stamp="$VENV/.koch-requirements.sha256"
want="$(cat requirements.txt requirements-ros.txt constraints.txt | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    say "installing Python dependencies (first time: several GB, a few minutes)"
    python -m pip install -q --upgrade pip
    python -m pip install -q -r requirements.txt -c constraints.txt
    if ! python -c "import rclpy" 2>/dev/null; then
        say "rclpy not importable: installing the ROS 2 wheels from PyPI"
        python -m pip install -q -r requirements-ros.txt -c constraints.txt
    fi
    echo "$want" > "$stamp"
fi

say "building the workspace with colcon"
colcon --log-base build/log build --symlink-install --base-paths src \
    --build-base build --install-base install --event-handlers console_cohesion- summary- >/dev/null \
    || { echo "colcon build failed; see build/log/latest_build" >&2; exit 1; }
say "ready: source scripts/env.sh to use the workspace"
