"""The whole path per policy family, test-sized: record -> convert -> train -> export -> deploy -> one
closed-loop episode scored by `rollout`. It asserts the pipeline (every stage hands the next what it
needs, the deployed node runs the export), not the success rate: the models are tiny and trained for
two steps.

The recorded bags hold the head camera's colour and depth; the converted dataset is also what
`lerobot-train` is run on, to show LeRobot's own trainer still reads it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from koch_bringup import graph
from koch_bringup.launcher import find_executable
from koch_bringup.rollout import REPORT_FILE, run_rollout
from koch_bringup.world_probe import expert_episode, running_world
from koch_common.feature_mapping import DEFAULT_MAPPING, load_mapping
from koch_common.latency_trace import read_run

pytestmark = [pytest.mark.dds, pytest.mark.video, pytest.mark.training]

TASK = "reach"
REPO_ID = "local/pipeline_reach"
DEPTH = "observation.images.head_depth"
RGBD = ["observation.state", "observation.images.head", DEPTH]
# Each family's training config (config/train/) with test-sized overrides.
TINY_DIFFUSION = ["policy.overrides.down_dims=[16,32]", "policy.overrides.spatial_softmax_num_keypoints=8",
                  "policy.overrides.diffusion_step_embed_dim=16", "policy.overrides.num_train_timesteps=10",
                  "policy.overrides.num_inference_steps=2", "policy.overrides.horizon=16",
                  "policy.overrides.n_action_steps=8"]  # 0.27 s of actions: a slow host still executes some
FAMILIES = {
    "act": ("train/act_sim.yaml", ["policy.overrides.dim_model=16", "policy.overrides.n_heads=2",
                                   "policy.overrides.dim_feedforward=16", "policy.overrides.chunk_size=8",
                                   "policy.overrides.n_action_steps=8"]),
    "diffusion": ("train/diffusion_pick_place.yaml", [*TINY_DIFFUSION, f"policy.input_features=[{','.join(RGBD)}]"]),
    "rgbd_diffusion": ("train/rgbd_diffusion_pick_taller.yaml",
                       [*TINY_DIFFUSION, "policy.overrides.d_model=16", "policy.overrides.n_heads=2",
                        "policy.overrides.n_denoiser_layers=1"]),
    # The instruction comes from the simulator's task topic, as the deploy graph remaps it.
    "smolvla": ("train/smolvla_pick_color.yaml", ["policy.overrides.chunk_size=8", "policy.overrides.n_action_steps=8",
                                                  "policy.overrides.num_steps=2"]),
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two scripted-expert reach episodes recorded from the simulated Koch (head RGB + depth), converted."""
    from koch_convert.convert import convert_bags

    root = tmp_path_factory.mktemp("pipeline")
    mapping = load_mapping(DEFAULT_MAPPING)
    topics = dict(mapping.topics)
    topics[mapping.task_topic] = "std_msgs/msg/String"
    specs = (graph.sim_robot(0, port_link=str(root / "follower"), cameras=("head",), task=TASK)
             + graph.scripted_teleop(task=TASK)
             + graph.recorder(str(root / "bags"), list(topics), list(topics.values())))
    with running_world(specs, root / "logs", TASK) as (running, probe):
        bags = [Path(expert_episode(probe, running, recording=True)[2]) for _ in range(2)]
    return convert_bags(bags, mapping, root / "dataset", repo_id=REPO_ID, vcodec="h264")


def test_the_converted_dataset_holds_the_depth_map_and_lerobot_train_trains_on_it(dataset: Path,
                                                                                    tmp_path: Path) -> None:
    info = json.loads((dataset / "meta" / "info.json").read_text())
    assert info["total_episodes"] == 2
    depth = info["features"][DEPTH]
    assert depth["dtype"] == "image" and depth["shape"][2] == 1 and depth["info"]["is_depth_map"] is True
    # LeRobot's own trainer, with this project's policy plugin, a few steps on the RGB + depth dataset.
    command = [sys.executable, "-m", "lerobot.scripts.lerobot_train", f"--dataset.repo_id={REPO_ID}",
               f"--dataset.root={dataset}", "--dataset.use_imagenet_stats=false",
               "--policy.type=rgbd_diffusion", "--policy.discover_packages_path=kuavo_train.policies",
               "--policy.push_to_hub=false", "--policy.device=cpu", "--policy.pretrained_backbone_weights=null",
               "--policy.down_dims=[16,32]", "--policy.d_model=16", "--policy.n_heads=2",
               "--policy.spatial_softmax_num_keypoints=8", "--policy.horizon=8", "--policy.n_action_steps=4",
               "--batch_size=2", "--steps=3", "--num_workers=0", "--save_checkpoint=false", "--log_freq=1",
               f"--output_dir={tmp_path / 'lerobot_train'}", "--wandb.enable=false"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "step:3" in (result.stdout + result.stderr).replace(" ", "")


@pytest.mark.parametrize("family", list(FAMILIES))
def test_each_family_goes_from_bags_to_a_closed_loop_episode(dataset: Path, tmp_path: Path, family: str) -> None:
    config, overrides = FAMILIES[family]
    run = tmp_path / "run"
    train = [str(find_executable("kuavo_train", "train")), "--config", config, f"dataset.root={dataset}",
             f"dataset.repo_id={REPO_ID}", f"output_dir={run}", "steps=2", "batch_size=2", "num_workers=0",
             "save_every=0", "log_every=1", "warmup_steps=0", "augment.enable=false", "device=cpu", *overrides]
    trained = subprocess.run(train, check=True, timeout=600, capture_output=True, text=True)
    checkpoint = run / "checkpoints" / "last"
    assert "ONNX export:" in trained.stderr  # training ends with the checked export beside the checkpoint

    report = run_rollout(checkpoint, TASK, 1, tmp_path / "rollout", port_link=str(tmp_path / "follower"))

    assert (report.policy_type, report.runtime) == (family, "onnx")  # the node ran the export by default
    policy_log = (tmp_path / "rollout" / "logs" / "policy_policy.log").read_text()
    assert f"runtime: onnx ({checkpoint / 'pretrained_model' / 'onnx'}; runtime:=auto)" in policy_log
    # Every chunk's trace points run forward along the path, capture to the goal on the bus. (A loaded host
    # may hold the tiny diffusion models' slower chunks as stale for the whole short episode: only ACT's
    # chunks are sure to reach the bus.)
    traces = read_run(tmp_path / "rollout" / "trace")
    assert all(not t.out_of_order() for t in traces), [t.out_of_order() for t in traces]
    assert report.latency_budget["end_to_end"]["n"] == sum(t.complete() for t in traces)
    if family == "act":
        assert traces and sum(t.complete() for t in traces) >= len(traces) // 2  # the rest: cut by the episode end
    assert len(report.episodes) == 1 and report.episodes[0].seed == 1001
    assert report.training["steps"] == 2 and report.training["train_episodes"] == 2
    assert np.isfinite(report.latency_p50_ms) and report.latency_p99_ms >= report.latency_p50_ms
    saved = json.loads((tmp_path / "rollout" / REPORT_FILE).read_text())
    assert saved["episodes"][0]["seed"] == 1001 and len(saved["success_ci95"]) == 2
    assert (tmp_path / "rollout" / "summary.png").stat().st_size > 0
    video = tmp_path / "rollout" / report.episodes[0].video
    with av.open(str(video)) as container:
        frames = sum(1 for _ in container.decode(video=0))
    assert frames >= 60  # the 2.5 s episode at 30 fps, and the held verdict frame
