"""The policy node's parameters, declared once (ROS-free): defaults, descriptions, constraints.

`koch_policy.policy_node` declares them as ROS parameters (koch_common.node_params) and
`koch_bringup.graph` reads the defaults from here, so a launch passes only what differs.
`chunk_policy`, `dry_run` and `task` may change at run time; everything else is read at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from koch_common.checkpoint_layout import RuntimeKind
from koch_common.config import ConfigError
from koch_common.cpu_budget import CpuRole
from koch_common.feature_mapping import DEFAULT_MAPPING
from koch_common.realtime import RealtimeSettings
from koch_common.settings import REQUIRED, setting
from koch_policy.chunk_policies import DEFAULT_CHUNK_POLICY, DEFAULT_REPLAN_THRESHOLD, ChunkPolicyName


@dataclass(frozen=True, kw_only=True)
class PolicySettings(RealtimeSettings):
    CPU_ROLE: ClassVar[CpuRole] = CpuRole.INFERENCE

    # Off by default: rclpy's multi-threaded executor loop, run under SCHED_FIFO, takes the CPU the
    # (normal-priority) inference worker needs on a 2-core machine: measured in the simulated graph, inference
    # p50 55 -> 123 ms and chunks 35 -> 15 Hz with priority 40 (docs/deploy.md, the CPU budget).
    realtime_priority: int = setting(
        0, "SCHED_FIFO priority (1-99) of the node's callback threads (the 30 Hz tick, observations, gates), below "
        "the driver's loop (50); inference keeps normal priority; needs CAP_SYS_NICE or an rtprio limit (without, "
        "the node logs why and runs normally); 0: normal scheduling (the default: on few cores the FIFO executor "
        "loop starves inference)", minimum=0, maximum=99)
    checkpoint: str = setting(
        REQUIRED, "the policy to run: a LeRobot pretrained_model directory written by kuavo_train, or its ONNX "
        "export (kuavo_export)")
    runtime: RuntimeKind = setting(
        RuntimeKind.AUTO, "what runs the checkpoint: auto (its ONNX export when one is beside it, as training "
        "writes by default, else PyTorch), onnx (the export, or refuse to start) or pytorch (the checkpoint itself)")
    device: str = setting("cpu", "where inference runs: cpu, cuda or cuda:<index> (a torch device; an ONNX export "
                          "uses the CUDA execution provider for cuda)")
    inference_threads: int = setting(
        0, "CPU threads for inference (onnxruntime's pool, or torch's); 0: the CPU budget's, the cores less one "
        "for the rest of the graph (koch_common.cpu_budget)", minimum=0)
    mapping: str = setting(
        DEFAULT_MAPPING, "feature mapping YAML (a path, or under config/): which topic feeds which policy input, "
        "the same one the converter built the training data with")
    task: str = setting(
        "", "the instruction a language-conditioned policy (SmolVLA, pi0) acts on, e.g. 'pick up the red cube'; also "
        "set by a std_msgs/String on ~/task (may change at run time); such a policy is not enabled without one",
        read_only=False)
    flow_steps: int = setting(
        0, "flow-matching VLAs (SmolVLA, pi0): integration steps per inference, fewer for faster inference with "
        "coarser actions; 0: the checkpoint's (num_steps / num_inference_steps)", minimum=0)
    enabled: bool = setting(
        False, "start with the policy commanding the arm; at run time use the ~/enable service (std_srvs/SetBool)")
    dry_run: bool = setting(
        False, "publish commands on ~/preview_chunk only, never on action_chunk (may change at run time)",
        read_only=False)
    chunk_policy: ChunkPolicyName = setting(
        DEFAULT_CHUNK_POLICY, "how predicted action chunks become the executed actions (koch_policy.chunk_policies; "
        "may change at run time)", read_only=False)
    replan_threshold: float = setting(
        DEFAULT_REPLAN_THRESHOLD, "overlap_blend, latest_only, rtc: request a new chunk when fewer than this fraction "
        "of the current one is left", minimum=0.0, maximum=1.0)
    deadman_timeout_s: float = setting(
        0.0, "hold the arm unless a true on ~/deadman (std_msgs/Bool) came within this many seconds; 0: no deadman",
        minimum=0.0)
    publish_markers: bool = setting(
        True, "publish the predicted tool path (~/predicted_path MarkerArray) and the ghost arm "
        "(~/ghost_joint_states) of each chunk, for RViz")
    publish_on_arrival: bool = setting(
        True, "publish a chunk as soon as it is inferred instead of at the next 30 Hz tick (saves up to one period)")
    inference_trigger: str = setting(
        "auto", "whose message starts a wanted inference: auto (the first camera: the freshest frame, no wait for a "
        "tick), tick (the 30 Hz tick), or an input feature key of the mapping")
    rate_hz: float | None = setting(
        None, "rate of the control tick and of the chunk's points (Hz); unset: the mapping's fps")
    n_action_steps: int | None = setting(
        None, "execute_k: actions executed per chunk before the next; unset: the checkpoint's n_action_steps",
        minimum=1)
    trace_log: str = setting(
        "", "a JSON-lines file for every chunk's trace points (capture, arrival, inference start/end, published; "
        "koch_common.latency_trace); empty: none (the stage latencies are on /diagnostics either way)")
    fault_injection: bool = setting(
        False, "offer ~/inject_model_fault (std_srvs/SetBool): while true the model's chunks are replaced by NaN, "
        "to drill the fault path (fault_drill); leave it off on a robot")

    def validate(self) -> PolicySettings:
        if self.rate_hz is not None and not self.rate_hz > 0:
            raise ConfigError(f"parameter rate_hz={self.rate_hz} must be positive (Hz); leave it unset for the "
                              "mapping's fps")
        return self
