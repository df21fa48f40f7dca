# Source me: the virtual environment and the built workspace, as `ros2 run` would see it.
_koch_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# colcon's and venv's setup scripts read unset variables: relax `set -u` while sourcing them.
case $- in *u*) _koch_nounset=1; set +u ;; *) _koch_nounset=0 ;; esac
# shellcheck disable=SC1091
source "${KOCH_VENV:-$_koch_root/.venv}/bin/activate"
# shellcheck disable=SC1091
source "$_koch_root/install/setup.bash"
[ "$_koch_nounset" = 1 ] && set -u
export KOCH_CONFIG_DIR="${KOCH_CONFIG_DIR:-$_koch_root/config}"
# Local datasets and checkpoints only: never reach for the Hugging Face Hub.
export HF_HUB_OFFLINE=1
# Keep DDS traffic on this machine and away from other users' graphs.
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
unset _koch_root _koch_nounset
