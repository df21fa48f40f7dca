"""Camera benchmark: three 640x480 @ 30 Hz streams from the sim renderer, then from the file source.

Each stream is a `camera` node in its own process (as the launch graph runs them) publishing
over real DDS to a probe in this process. Printed per source:
  - capture->publish latency p50/p99, measured by the nodes (their /diagnostics windows: the
    median of the windows' p50 and the largest window p99),
  - capture->receive latency p50/p99 at the probe (all frames; includes DDS delivery),
  - delivered (published) fps per stream and dropped frames, from the nodes; what the single Python
    probe manages to receive is printed too (deserialising 3 x 27 MB/s in Python is the probe's limit),
  - CPU use of each camera process (% of one core, from /proc), and as a reference measured in the
    same run, the CPU cost of producing one frame without ROS (render or decode), with the ratio.

    python benchmarks/bench_cameras.py [--quick] [--seconds S]
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from results_log import Figure, record

WIDTH, HEIGHT, FPS, STREAMS = 640, 480, 30.0, 3
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def make_video(path: Path, seconds: float = 3.0) -> Path:
    """A 640x480 recording of the simulated arm moving (h264), to replay as a camera."""
    from koch_camera.file_source import write_video
    from koch_camera.settings import CameraSettings
    from koch_camera.sim_source import sim_camera_config
    from koch_common.robot import load_koch
    from koch_sim.render import SceneRenderer
    from koch_sim.tasks import sample_layout

    sim = sim_camera_config(CameraSettings(width=WIDTH, height=HEIGHT))
    koch = load_koch()
    renderer = SceneRenderer(koch, sim, "head", WIDTH, HEIGHT)
    objects = sample_layout("pick_color", 0, sim).objects
    frames = []
    for i in range(int(seconds * FPS)):
        q = np.array(koch.home)
        q[0], q[1] = 0.6 * np.sin(i / 15), -0.25 + 0.3 * np.sin(i / 20)
        frames.append(renderer.render_rgbd(q, objects)[0])
    renderer.close()
    return write_video(path, frames, FPS)


def reference_cost(kind: str, video: Path, frames: int = 60) -> float:
    """CPU seconds to produce one frame without ROS (the work the node cannot avoid)."""
    from koch_camera.file_source import VideoFileSource
    from koch_camera.settings import CameraSettings
    from koch_camera.sim_source import SimSceneSource, sim_camera_config

    if kind == "sim":
        source = SimSceneSource(sim_camera_config(CameraSettings(width=WIDTH, height=HEIGHT)))

        def work() -> None:  # one RGB render of the world state (the streams publish no depth), no pacing
            source.renderer.render_rgb(*source.state())
    else:
        source = VideoFileSource(str(video), 1e6, time.monotonic_ns)
        source.open()
        work = source._decode  # decode only, no pacing
    work()
    start = time.process_time()
    for _ in range(frames):
        work()
    return (time.process_time() - start) / frames


def run_streams(kind: str, video: Path, warmup: float, seconds: float) -> dict:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    names = [f"bench_{kind}_{i}" for i in range(STREAMS)]
    procs = []
    for name in names:
        params = ["-p", f"source:={kind}", "-p", f"width:={WIDTH}", "-p", f"height:={HEIGHT}", "-p", f"fps:={FPS}",
                  "-p", "diagnostics_period_s:=1.0", "-r", f"__ns:=/{name}"]
        if kind == "file":
            params += ["-p", f"path:={video}"]
        procs.append(subprocess.Popen(["camera", "--ros-args", *params], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True))
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("bench_probe", context=context)
    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    executor.add_node(node)
    recv: dict[str, list[float]] = {n: [] for n in names}
    stamps: dict[str, list[int]] = {n: [] for n in names}
    diag: dict[str, list[dict[str, str]]] = {n: [] for n in names}
    measuring = [False]

    def on_image(name: str):
        def callback(msg: Image) -> None:
            if measuring[0]:
                stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
                recv[name].append((node.get_clock().now().nanoseconds - stamp) / 1e6)
                stamps[name].append(stamp)
        return callback

    def on_diag(msg: DiagnosticArray) -> None:
        if measuring[0]:
            for status in msg.status:
                for name in names:
                    if status.name.startswith(f"/{name}/"):
                        diag[name].append({v.key: v.value for v in status.values})

    for name in names:
        node.create_subscription(Image, f"/{name}/color/image_raw", on_image(name), qos_profile_sensor_data)
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 50)
    try:
        deadline = time.monotonic() + warmup
        while time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"camera process exited: {p.stderr.read()}")
        cpu0 = [cpu_seconds(p.pid) for p in procs]
        t0 = time.monotonic()
        measuring[0] = True
        while time.monotonic() < t0 + seconds:
            executor.spin_once(timeout_sec=0.05)
        elapsed = time.monotonic() - t0
        cpu = [(cpu_seconds(p.pid) - c) / elapsed * 100 for p, c in zip(procs, cpu0)]
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
    all_recv = np.concatenate([np.array(v) for v in recv.values() if v]) if any(recv.values()) else np.zeros(1)
    windows = [w for ws in diag.values() for w in ws[1:]]  # the first window began before measuring
    p50s = [float(w["latency_p50_ms"]) for w in windows]
    p99s = [float(w["latency_p99_ms"]) for w in windows]
    dropped = {n: int(ws[-1]["dropped_frames"]) - int(ws[0]["dropped_frames"]) if ws else -1
               for n, ws in diag.items()}
    return {
        "fps": [float(np.mean([float(w["delivered_fps"]) for w in ws[1:]])) if len(ws) > 1 else 0.0
                for ws in diag.values()],
        "received_fps": [len(v) / elapsed for v in recv.values()],
        "dropped": list(dropped.values()),
        "publish_p50": float(np.median(p50s)) if p50s else float("nan"),
        "publish_p99": max(p99s) if p99s else float("nan"),
        "recv_p50": float(np.percentile(all_recv, 50)),
        "recv_p99": float(np.percentile(all_recv, 99)),
        "cpu": cpu,
        "monotonic": all(np.all(np.diff(s) > 0) for s in stamps.values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5 s per source instead of 20 s")
    parser.add_argument("--seconds", type=float, default=None, help="measurement time per source")
    args = parser.parse_args()
    seconds = args.seconds or (5.0 if args.quick else 20.0)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(101, 200)))
    print(f"{STREAMS} camera processes x {WIDTH}x{HEIGHT} rgb8 @ {FPS:.0f} Hz over DDS, {seconds:.0f} s per source, "
          f"{os.cpu_count()} CPUs")
    figures = []
    with tempfile.TemporaryDirectory() as tmp:
        video = make_video(Path(tmp) / "recording.mp4")
        for kind in ("sim", "file"):
            ref = reference_cost(kind, video)
            r = run_streams(kind, video, warmup=4.0, seconds=seconds)
            per_frame_cpu = [c / 100 / max(f, 1e-9) for c, f in zip(r["cpu"], r["fps"])]
            print(f"\n[{kind}]")
            print(f"  capture->publish latency (node): p50 {r['publish_p50']:.2f} ms, p99 {r['publish_p99']:.2f} ms")
            print(f"  capture->receive latency (probe, over DDS): p50 {r['recv_p50']:.2f} ms, "
                  f"p99 {r['recv_p99']:.2f} ms")
            print(f"  published fps per stream (node): {', '.join(f'{f:.1f}' for f in r['fps'])}; "
                  f"dropped frames: {r['dropped']}; stamps increasing: {r['monotonic']}")
            print(f"  received fps per stream (one Python probe for all three, best-effort QoS): "
                  f"{', '.join(f'{f:.1f}' for f in r['received_fps'])}")
            print(f"  CPU per camera process: {', '.join(f'{c:.1f}%' for c in r['cpu'])} of one core "
                  f"(total {sum(r['cpu']):.1f}%)")
            print(f"  CPU per frame: {np.mean(per_frame_cpu) * 1e3:.2f} ms; reference ({kind} frame without ROS): "
                  f"{ref * 1e3:.2f} ms; ratio {np.mean(per_frame_cpu) / ref:.1f}x")
            source = {"sim": "sim renderer", "file": "file source"}[kind]
            figures += [
                Figure(f"{source}: capture->publish latency p50 (node)", r["publish_p50"], "ms"),
                Figure(f"{source}: capture->publish latency p99 (node)", r["publish_p99"], "ms"),
                Figure(f"{source}: capture->receive latency p50 (probe, over DDS)", r["recv_p50"], "ms"),
                Figure(f"{source}: capture->receive latency p99 (probe, over DDS)", r["recv_p99"], "ms"),
                Figure(f"{source}: published rate per stream (mean)", float(np.mean(r["fps"])), "fps"),
                # a stream without diagnostics windows reports -1: no count, left out below
                Figure(f"{source}: dropped frames, all streams",
                       sum(r["dropped"]) if min(r["dropped"]) >= 0 else float("nan"), "frames"),
                Figure(f"{source}: CPU of the camera processes", sum(r["cpu"]), "% of one core"),
                Figure(f"{source}: CPU per frame", np.mean(per_frame_cpu) * 1e3, "ms"),
                Figure(f"{source}: CPU per frame / the frame without ROS", np.mean(per_frame_cpu) / ref, "x"),
            ]
    sys.stdout.flush()
    record("cameras", [f for f in figures if np.isfinite(f.value)], quick=args.quick)


if __name__ == "__main__":
    main()
