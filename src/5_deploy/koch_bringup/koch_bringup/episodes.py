"""`record_episodes`: drive episodes on a running `record` graph, as an operator would with `ros2 service call`.

Start the graph first (`launch_graph record sim:=true recorder:=node bag_root:=...`), then:
for each episode a new target (/sim/sim_world/new_episode), the scripted leader home, then
/recorder/start, the expert's reach (/leader/scripted_leader/reach), /recorder/stop. Each
episode is one bag `episode_NNNN` under the recorder's bag root.
"""

from __future__ import annotations

import argparse
import time

from koch_bringup.demo import WorldProbe
from koch_bringup.ros_session import RosSession, wait_for
from koch_sim.sim_config import load_sim


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--wait", type=float, default=120.0, help="seconds to wait for the graph to come up")
    args = parser.parse_args(argv)
    task = load_sim().task
    session = RosSession()
    try:
        probe = WorldProbe(session)
        wait_for(lambda: probe.joints is not None, args.wait,
                 "follower joint states: is `launch_graph record sim:=true recorder:=node` running?")
        for index in range(args.episodes):
            target = probe.new_target()
            probe.trigger("/leader/scripted_leader/go_home")
            time.sleep(1.3)
            probe.trigger("/recorder/start")
            probe.trigger("/leader/scripted_leader/reach")
            time.sleep(task.episode_duration_s)
            bag = probe.trigger("/recorder/stop").split()[0]
            distance = probe.tcp_distance(target)
            print(f"episode {index + 1}/{args.episodes}: {bag} (final tcp distance {distance * 100:.1f} cm)",
                  flush=True)
    finally:
        session.close()
