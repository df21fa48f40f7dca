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
# MuJoCo renders the simulated cameras headless (EGL; Mesa's software rasteriser without a GPU).
export MUJOCO_GL="${MUJOCO_GL:-egl}"
# Keep DDS traffic on this machine and away from other users' graphs.
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
# The workspace's executables (what `ros2 run <pkg> <exe>` finds in install/<pkg>/lib/<pkg>/) on
# PATH, so the README's `launch_graph …`, `bag_to_lerobot …`, `train …` run without the ros2 CLI.
for _koch_bin in "$_koch_root"/install/*/lib/*/; do
    case ":$PATH:" in *":${_koch_bin%/}:"*) ;; *) PATH="${_koch_bin%/}:$PATH" ;; esac
done
export PATH
unset _koch_root _koch_nounset _koch_bin
