"""`record_episodes`: drive episodes on a running `record` graph, as an operator would with `ros2 service call`.

Start the graph first (`launch_graph record sim:=true recorder:=node task:=pick_place bag_root:=...`),
then: for each episode the next seeded layout (/sim/sim_world/new_episode), the scripted leader
home, /recorder/start, the expert's demonstration (/leader/scripted_leader/run_expert),
/recorder/stop. Each episode is one bag `episode_NNNN` under the recorder's bag root, with the
episode's task text on /sim/task.
"""

from __future__ import annotations

import argparse

from koch_bringup.launcher import GraphProcess
from koch_bringup.ros_session import RosSession, wait_for
from koch_bringup.world_probe import WorldProbe, expert_episode
from koch_sim.sim_config import TaskKind


class _Attached:
    """Stands in for a GraphProcess when the graph was started elsewhere: nothing to check."""

    def check_alive(self) -> None:
        pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--task", default=None, choices=[k.value for k in TaskKind],
                        help="the task the running sim lays out (its task:=; default: sim.yaml's task)")
    parser.add_argument("--wait", type=float, default=120.0, help="seconds to wait for the graph to come up")
    args = parser.parse_args(argv)
    session = RosSession()
    try:
        probe = WorldProbe(session, args.task)
        wait_for(lambda: probe.joints is not None, args.wait,
                 "follower joint states: is `launch_graph record sim:=true recorder:=node` running?")
        running: GraphProcess = _Attached()  # type: ignore[assignment]
        for index in range(args.episodes):
            layout, outcome, bag = expert_episode(probe, running, recording=True)
            print(f"episode {index + 1}/{args.episodes}: {bag} (seed {layout.seed}, {layout.text!r}: {outcome.detail})",
                  flush=True)
    finally:
        session.close()
