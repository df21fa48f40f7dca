"""Simulator benchmark: physics step, rendering per camera, and the real-time factor under the record graph.

    python benchmarks/bench_sim.py [--graph-s 120] [--quick]

Printed, each against its budget measured in the same run (the budget is the time the step or the
frame may take: 1 / rate):
  - MuJoCo physics: wall time per step of the Koch with three cubes (pick_color), stepped in the
    batches the real-time loop uses, against the 2 ms timestep;
  - rendering, per camera (head, wrist) at 128×96 and 640×480, RGB and depth separately, against the
    30 Hz frame period;
  - the real-time factor the sim world reports on /diagnostics while the full record graph runs
    (physics, follower driver, head and wrist cameras with depth, scripted expert and teleop, the
    recorder writing MCAP) and the expert demonstrates pick_place episode after episode: median and
    minimum over its 1 s windows, and the simulated time skipped because stepping fell behind.
`--quick`: 30 s of graph.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from results_log import Comparison, Figure, Target, record


def physics_step_s(steps: int = 5000, batch: int = 2) -> tuple[float, float]:
    """(wall seconds per step, timestep) for the pick_color scene with the arm holding home."""
    from koch_common.robot import load_koch
    from koch_sim.physics import KochPhysics
    from koch_sim.sim_config import load_sim
    from koch_sim.tasks import sample_layout

    koch, sim = load_koch(), load_sim()
    physics = KochPhysics(koch, sim, sample_layout("pick_color", 0, sim))
    for joint, angle in enumerate(koch.home):
        physics.drive(joint, True, angle, None)
    dt = sim.physics.timestep_s
    physics.step(0.2)
    start = time.perf_counter()
    for _ in range(steps // batch):
        physics.step(batch * dt)
    return (time.perf_counter() - start) / steps, dt


def render_s(mount: str, width: int, height: int, depth: bool, frames: int = 40) -> float:
    """Wall seconds per rendered frame (scene update + render + read-back) of one camera."""
    from koch_common.robot import load_koch
    from koch_sim.render import SceneRenderer
    from koch_sim.sim_config import load_sim
    from koch_sim.tasks import sample_layout

    koch, sim = load_koch(), load_sim()
    renderer = SceneRenderer(koch, sim, mount, width, height)
    objects = sample_layout("pick_color", 0, sim).objects
    renderer.pose(np.array(koch.home), objects)
    gl = renderer._renderer
    assert gl is not None
    if depth:
        gl.enable_depth_rendering()
    for _ in range(3):
        gl.update_scene(renderer.data, camera=mount)
        gl.render()
    start = time.perf_counter()
    for _ in range(frames):
        gl.update_scene(renderer.data, camera=mount)
        gl.render()
    elapsed = (time.perf_counter() - start) / frames
    renderer.close()
    return elapsed


def graph_real_time_factor(seconds: float) -> tuple[list[float], float, int]:
    """RTF windows and skipped seconds from /sim/sim_world's diagnostics while the record graph records pick_place."""
    from diagnostic_msgs.msg import DiagnosticArray

    from koch_bringup import graph
    from koch_bringup.world_probe import expert_episode, running_world
    from koch_common.feature_mapping import load_mapping

    mapping = load_mapping("mapping/koch_sim.yaml")
    topics = dict(mapping.topics)
    topics[mapping.task_topic] = "std_msgs/msg/String"
    rtf: list[float] = []
    skipped = [0.0]
    episodes = 0
    with tempfile.TemporaryDirectory(prefix="bench_sim_") as tmp:
        specs = (graph.sim_robot(0, port_link=f"{tmp}/follower", task="pick_place")
                 + graph.scripted_teleop(task="pick_place")
                 + graph.recorder(f"{tmp}/bags", list(topics), list(topics.values())))
        with running_world(specs, Path(tmp) / "logs", "pick_place") as (running, probe):

            def on_diagnostics(msg: DiagnosticArray) -> None:
                for status in msg.status:
                    if status.hardware_id == "sim":
                        values = {kv.key: kv.value for kv in status.values}
                        if measuring:
                            rtf.append(float(values["real_time_factor"]))
                        skipped[0] = float(values["skipped_s"])

            measuring = False
            probe.node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
            time.sleep(5.0)  # the graph settles: cameras up, DDS discovery done
            skipped_before = skipped[0]
            measuring = True
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                expert_episode(probe, running, recording=True)
                episodes += 1
            measuring = False
    return rtf, skipped[0] - skipped_before, episodes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--graph-s", type=float, default=120.0)
    parser.add_argument("--quick", action="store_true", help="30 s of graph")
    args = parser.parse_args()
    figures: list[Figure] = []
    step, dt = physics_step_s()
    print(f"physics step: {step * 1e6:.1f} us per {dt * 1e3:.0f} ms step = {step / dt:.3f} of the budget")
    figures += [Figure("physics step", step * 1e6, "us"),
                Figure("physics step / timestep", step / dt, "x", Target(Comparison.AT_MOST, 0.25))]
    frame_budget = 1.0 / 30.0
    for width, height in ((128, 96), (640, 480)):
        for mount in ("head", "wrist"):
            for depth in (False, True):
                kind = "depth" if depth else "RGB"
                t = render_s(mount, width, height, depth)
                print(f"render {mount} {width}x{height} {kind}: {t * 1e3:.2f} ms = "
                      f"{t / frame_budget:.3f} of a 30 Hz frame")
                name = f"render {mount} {width}x{height} {kind}"
                target = Target(Comparison.AT_MOST, 0.25) if width == 128 else None
                figures += [Figure(name, t * 1e3, "ms"), Figure(f"{name} / 30 Hz frame", t / frame_budget, "x", target)]
    seconds = 30.0 if args.quick else args.graph_s
    rtf, skipped, episodes = graph_real_time_factor(seconds)
    if not rtf:
        print("no real-time factor reported by /sim/sim_world", file=sys.stderr)
        return 1
    print(f"record graph, {episodes} pick_place episodes in {seconds:.0f} s: real-time factor median "
          f"{np.median(rtf):.3f}, min {min(rtf):.3f} over {len(rtf)} windows; simulated time skipped {skipped:.3f} s")
    figures += [Figure("record graph: real-time factor (median)", float(np.median(rtf)), "x",
                       Target(Comparison.AT_LEAST, 0.99)),
                Figure("record graph: real-time factor (min 1 s window)", float(min(rtf)), "x"),
                Figure("record graph: simulated time skipped", skipped, "s", Target(Comparison.AT_MOST, 0.5)),
                Figure("record graph: pick_place episodes", episodes, "")]
    record("sim", figures, quick=args.quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
