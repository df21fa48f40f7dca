#!/usr/bin/env bash
# Container entrypoint: sources ROS 2 (when the image has it: ros:jazzy sets ROS_DISTRO) and the
# workspace (venv, colcon install, workspace executables on PATH), then runs the given command.
set -e
if [ -n "${ROS_DISTRO:-}" ] && [ -f "/opt/ros/$ROS_DISTRO/setup.bash" ]; then
    # ROS's setup scripts read unset variables.
    set +u
    # shellcheck disable=SC1090
    source "/opt/ros/$ROS_DISTRO/setup.bash"
fi
ws="${KOCH_WS:-/ws}"
if [ ! -f "$ws/install/setup.bash" ]; then
    echo "entrypoint: $ws/install/setup.bash is missing: the workspace is not built (run scripts/setup.sh)" >&2
    exit 2
fi
# shellcheck disable=SC1091
source "$ws/scripts/env.sh"
if [ "$#" -eq 0 ]; then
    set -- bash
fi
exec "$@"
