# Source me: the virtual environment and the built workspace, as `ros2 run` would see it.
_koch_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC1091
source "${KOCH_VENV:-$_koch_root/.venv}/bin/activate"
# shellcheck disable=SC1091
source "$_koch_root/install/setup.bash"
export KOCH_CONFIG_DIR="${KOCH_CONFIG_DIR:-$_koch_root/config}"
# Keep DDS traffic on this machine and away from other users' graphs.
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
unset _koch_root
