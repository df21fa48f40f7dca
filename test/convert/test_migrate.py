"""The LeRobot v2.1 -> v3.0 migration wrapper, on a small v2.1 dataset written in the v2.1 layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from lerobot.datasets.lerobot_dataset import LeRobotDataset

from koch_convert.migrate import main as migrate_main

JOINTS = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
LENGTHS = (5, 7)
TASK = "reach the red target"


def stats(values: np.ndarray) -> dict:
    values = values.reshape(len(values), -1).astype(np.float64)
    return {"min": values.min(0).tolist(), "max": values.max(0).tolist(), "mean": values.mean(0).tolist(),
            "std": values.std(0).tolist(), "count": [len(values)]}


def write_v21(root: Path) -> None:
    scalar = {"shape": [1], "names": None}
    features = {
        "observation.state": {"dtype": "float32", "shape": [6], "names": JOINTS},
        "action": {"dtype": "float32", "shape": [6], "names": JOINTS},
        "timestamp": {"dtype": "float32", **scalar},
        **{k: {"dtype": "int64", **scalar} for k in ("frame_index", "episode_index", "index", "task_index")},
    }
    info = {
        "codebase_version": "v2.1", "robot_type": "koch", "total_episodes": len(LENGTHS),
        "total_frames": sum(LENGTHS), "total_tasks": 1, "total_videos": 0, "total_chunks": 1,
        "chunks_size": 1000, "fps": 30, "splits": {"train": f"0:{len(LENGTHS)}"},
        "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
        "video_path": None, "features": features,
    }
    (root / "meta").mkdir(parents=True)
    (root / "data" / "chunk-000").mkdir(parents=True)
    (root / "meta" / "info.json").write_text(json.dumps(info))
    (root / "meta" / "tasks.jsonl").write_text(json.dumps({"task_index": 0, "task": TASK}) + "\n")
    episodes, episode_stats, index = [], [], 0
    for e, length in enumerate(LENGTHS):
        state = np.arange(length * 6, dtype=np.float32).reshape(length, 6) + 100 * e
        columns = {
            "observation.state": list(state), "action": list(state + 0.5),
            "timestamp": np.arange(length, dtype=np.float32) / 30, "frame_index": np.arange(length),
            "episode_index": np.full(length, e), "index": np.arange(index, index + length),
            "task_index": np.zeros(length, dtype=np.int64),
        }
        pd.DataFrame(columns).to_parquet(root / "data" / "chunk-000" / f"episode_{e:06d}.parquet")
        episodes.append({"episode_index": e, "tasks": [TASK], "length": length})
        episode_stats.append({"episode_index": e, "stats": {
            k: stats(np.stack(v) if k in ("observation.state", "action") else np.asarray(v))
            for k, v in columns.items()}})
        index += length
    (root / "meta" / "episodes.jsonl").write_text("".join(json.dumps(x) + "\n" for x in episodes))
    (root / "meta" / "episodes_stats.jsonl").write_text("".join(json.dumps(x) + "\n" for x in episode_stats))


def test_migrates_a_copy_and_leaves_the_source(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source, output = tmp_path / "old", tmp_path / "new"
    write_v21(source)
    before = sorted(p.relative_to(source) for p in source.rglob("*"))
    assert migrate_main(["--source", str(source), "--output", str(output)]) == 0
    assert sorted(p.relative_to(source) for p in source.rglob("*")) == before, "source untouched"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new", "old"], "no work folder left"
    dataset = LeRobotDataset("local/new", root=output)
    assert dataset.meta.info["codebase_version"] == "v3.0"
    assert dataset.num_episodes == 2 and dataset.num_frames == sum(LENGTHS)
    item = dataset[LENGTHS[0] + 3]
    assert int(item["episode_index"]) == 1 and int(item["frame_index"]) == 3
    np.testing.assert_array_equal(item["observation.state"].numpy(), np.arange(18, 24, dtype=np.float32) + 100)
    assert item["task"] == TASK

    assert migrate_main(["--source", str(output), "--output", str(tmp_path / "again")]) == 1
    assert "codebase_version 'v3.0'" in capsys.readouterr().err
