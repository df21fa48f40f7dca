#!/usr/bin/env bash
# Sources ROS 2 (when installed) and the workspace, then runs the given command.
set -e
if [ -f /opt/ros/jazzy/setup.bash ]; then
    # shellcheck disable=SC1091
    source /opt/ros/jazzy/setup.bash
fi
# shellcheck disable=SC1091
source "${KOCH_WS:-/ws}/scripts/env.sh"
exec "$@"
