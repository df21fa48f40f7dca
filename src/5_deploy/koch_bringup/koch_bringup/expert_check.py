"""`expert_check`: the scripted expert's success rate on a simulated task, through the real bus.

Starts the simulated Koch (MuJoCo behind the servo emulator, the follower driver on its pty)
and the scripted expert as the leader arm with teleop, exactly as the record graph does but
without cameras or a recorder, and plays `--episodes` seeded evaluation layouts (seeds 1000
and up). Every command reaches the simulated servos as Dynamixel packets through the driver.

    expert_check --task pick_place --episodes 50
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from koch_bringup import graph
from koch_bringup.world_probe import EVAL_SEED, expert_episode, running_world
from koch_sim.sim_config import TaskKind, load_sim, task_kind


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default=None, choices=[k.value for k in TaskKind],
                        help="the task (default: sim.yaml's task)")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--seed", type=int, default=EVAL_SEED, help="seed of the first layout")
    parser.add_argument("--logs", type=Path, default=None, help="folder for the nodes' logs (default: a temporary one)")
    args = parser.parse_args(argv)
    task = task_kind(args.task or load_sim().task).value
    successes = 0
    with tempfile.TemporaryDirectory(prefix="expert_check_") as scratch:
        # its own pty link, so a simulated robot already running here keeps its port
        specs = (graph.sim_robot(args.seed - 1, port_link=f"{scratch}/follower", cameras=(), task=task)
                 + graph.scripted_teleop(task=task))
        logs = args.logs or Path(scratch)
        with running_world(specs, logs, task) as (running, probe):
            for index in range(args.episodes):
                layout, outcome, _ = expert_episode(probe, running, recording=False)
                successes += outcome.success
                print(f"  {index + 1:3d}/{args.episodes} seed {layout.seed} {layout.text!r}: "
                      f"{'ok  ' if outcome.success else 'FAIL'} {outcome.detail}", flush=True)
    print(f"expert success on {task}: {successes}/{args.episodes} = {successes / args.episodes:.0%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
