"""What a rollout shows: one head-camera video per episode and a summary plot.

The film records the head camera's frames and the chunks the policy commanded, as any subscriber
would; each video frame shows the image (scaled up), the tool path of the latest commanded chunk
(from forward kinematics, projected with the head camera's pose and intrinsics), the tool's trail
so far, and at the end the outcome. Encoded with PyAV (H.264, yuv420p: any player opens it).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import av
import cv2
import numpy as np
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image
from trajectory_msgs.msg import JointTrajectory

from koch_common.image_codec import from_image_msg, to_rgb
from koch_common.kinematics import tcp_position
from koch_common.topics import topic
from koch_sim.mjcf import head_optical_pose, project

if TYPE_CHECKING:
    from koch_bringup.rollout import EpisodeRecord, RolloutReport
    from koch_bringup.world_probe import WorldProbe

SCALE = 4            # video pixels per camera pixel (the sim's head camera is 128x96)
OUTCOME_HOLD_S = 1.0  # the last frame, with the verdict, stays this long
PATH_COLOUR = (0, 220, 255)    # RGB: commanded tool path (cyan)
TRAIL_COLOUR = (255, 200, 0)   # tool trail so far (amber)
SUCCESS_COLOUR = (40, 200, 60)
FAILURE_COLOUR = (230, 50, 40)


@dataclass
class Take:
    """One episode's material: frames with the tool position and latest commanded path at that time."""

    frames: list[np.ndarray] = field(default_factory=list)
    tool: list[np.ndarray] = field(default_factory=list)           # tcp (3,) per frame
    paths: list[np.ndarray | None] = field(default_factory=list)   # commanded tcp path (K, 3) per frame


class EpisodeFilm:
    """Subscribes to the head camera and the commanded chunks on the probe's node; films while rolling."""

    def __init__(self, probe: WorldProbe, fps: float) -> None:
        self.probe = probe
        self.fps = fps
        self._lock = threading.Lock()
        self._take: Take | None = None
        self._path: np.ndarray | None = None
        self._k: np.ndarray | None = None
        self._pose = head_optical_pose(probe.sim)
        group = probe.callback_group
        node = probe.node
        # The cameras publish with sensor-data QoS (best effort), as cameras do.
        node.create_subscription(Image, topic("head_image"), self._on_image, qos_profile_sensor_data,
                                 callback_group=group)
        node.create_subscription(CameraInfo, topic("head_camera_info"), self._on_info, qos_profile_sensor_data,
                                 callback_group=group)
        node.create_subscription(JointTrajectory, topic("follower_joint_commands"), self._on_chunk, 10,
                                 callback_group=group)

    def _on_info(self, msg: CameraInfo) -> None:
        self._k = np.array(msg.k, dtype=np.float64).reshape(3, 3)

    def _on_chunk(self, msg: JointTrajectory) -> None:
        if not msg.points:
            return
        index = [list(msg.joint_names).index(n) for n in self.probe.names]
        kinematics = self.probe.koch.kinematics
        path = np.array([tcp_position(np.array(p.positions)[index], kinematics) for p in msg.points])
        with self._lock:
            self._path = path

    def _on_image(self, msg: Image) -> None:
        with self._lock:
            take, path = self._take, self._path
        joints = self.probe.joints
        if take is None or joints is None:
            return
        frame = to_rgb(from_image_msg(msg), msg.encoding)
        with self._lock:
            take.frames.append(frame)
            take.tool.append(tcp_position(joints, self.probe.koch.kinematics))
            take.paths.append(path)

    def start(self) -> None:
        with self._lock:
            self._take, self._path = Take(), None

    def stop(self) -> Take:
        with self._lock:
            take, self._take = self._take or Take(), None
        return take

    def write(self, take: Take, record: EpisodeRecord, path: Path) -> Path | None:
        """The take as an mp4 at `path` (None when no frame arrived: no camera in the graph)."""
        if not take.frames or self._k is None:
            return None
        k = self._k.copy()
        k[:2] *= SCALE
        height, width = take.frames[0].shape[0] * SCALE, take.frames[0].shape[1] * SCALE
        path.parent.mkdir(parents=True, exist_ok=True)
        trail: list[tuple[int, int]] = []
        with av.open(str(path), "w") as container:
            stream: Any = container.add_stream("libx264", rate=round(self.fps))
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = {"crf": "23", "preset": "veryfast"}
            last = None
            for index, (frame, tool, commanded) in enumerate(zip(take.frames, take.tool, take.paths)):
                image = cv2.resize(frame, (width, height), interpolation=cv2.INTER_LINEAR)
                trail.append(tuple(np.round(project(tool[None], self._pose, k)[0][0]).astype(int)))
                if len(trail) > 1:
                    cv2.polylines(image, [np.array(trail, np.int32)], False, TRAIL_COLOUR, 2, cv2.LINE_AA)
                if commanded is not None and len(commanded) > 1:
                    pixels = np.round(project(commanded, self._pose, k)[0]).astype(np.int32)
                    cv2.polylines(image, [pixels], False, PATH_COLOUR, 2, cv2.LINE_AA)
                    cv2.circle(image, tuple(pixels[-1]), 4, PATH_COLOUR, -1, cv2.LINE_AA)
                _caption(image, f"seed {record.seed}  t={index / self.fps:4.1f} s", (8, 20))
                _caption(image, record.text, (8, height - 10))
                last = image
                _encode(container, stream, image)
            assert last is not None
            verdict = "SUCCESS" if record.success else "FAIL"
            colour = SUCCESS_COLOUR if record.success else FAILURE_COLOUR
            cv2.rectangle(last, (0, 0), (width - 1, height - 1), colour, 6)
            _caption(last, f"{verdict}  {record.final_detail}", (8, 44), colour)
            for _ in range(round(OUTCOME_HOLD_S * self.fps)):
                _encode(container, stream, last)
            for packet in stream.encode():
                container.mux(packet)
        return path


def _caption(image: np.ndarray, text: str, origin: tuple[int, int],
             colour: tuple[int, int, int] = (255, 255, 255)) -> None:
    cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1, cv2.LINE_AA)


def _encode(container: Any, stream: Any, image: np.ndarray) -> None:
    for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
        container.mux(packet)


def plot_summary(report: RolloutReport, path: Path) -> Path:
    """A PNG: each episode's final task measure (coloured by outcome) and its time to success."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    episodes = report.episodes
    seeds = [str(e.seed) for e in episodes]
    colours = ["tab:green" if e.success else "tab:red" for e in episodes]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(6.0, 0.18 * len(episodes) + 2), 6), sharex=True)
    top.bar(seeds, [e.final_measure * 100 for e in episodes], color=colours)
    top.plot(seeds, [e.start_measure * 100 for e in episodes], "k_", markersize=10, label="at the start")
    top.set_ylabel(f"final {report.measure} (cm)")
    top.legend(loc="upper right", fontsize=8)
    low, high = report.success_ci
    top.set_title(f"{report.policy_type} ({report.runtime}) on {report.task}: {report.successes}/{len(episodes)} "
                  f"= {report.success_rate:.0%}, 95% CI [{low:.0%}, {high:.0%}]"
                  + ("" if report.choice_counts is None else
                     f"; went for the goal first {report.choice_counts[0]}/{len(episodes)}")
                  + f"\ninference p50 {report.latency_p50_ms:.0f} / p99 {report.latency_p99_ms:.0f} ms", fontsize=9)
    bottom.bar(seeds, [e.time_to_success_s if e.time_to_success_s is not None else 0.0 for e in episodes],
               color=colours)
    if report.successes == 0:
        bottom.set_ylim(0.0, 1.0)
        bottom.text(0.5, 0.5, "no episode succeeded", transform=bottom.transAxes, ha="center", va="center")
    else:
        bottom.set_ylim(bottom=0.0)
    bottom.set_ylabel("time to success (s)")
    bottom.set_xlabel("episode seed (red: failed)")
    bottom.tick_params(axis="x", labelrotation=90, labelsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
