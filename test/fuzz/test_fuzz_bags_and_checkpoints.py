"""Fuzzing the binary and JSON inputs: recorded bags with damaged bytes, and checkpoints with mutated JSON.

A bag recorded by the project's recorder gets one to three byte ranges overwritten, or is cut short, or
loses its metadata.yaml; the integrity check and the reader must read it or refuse it with BagReadError.
A tiny real checkpoint (test/runtime/tiny_checkpoint.py) gets values of its config.json and processor
files changed as the YAML fuzzing does; `load_runtime`, the robot's load path, must load it or refuse
it with CheckpointError / ConfigError, and never import or run anything named by the JSON.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from rosbags.typesys import Stores, get_typestore
from test_fuzz_config_files import FUZZ, leaf_paths, mutate, values

from koch_common.config import ConfigError
from koch_convert.bag_integrity import check_bag
from koch_convert.bag_reader import BagReadError, read_topics
from koch_record.bag_writer import BagWriter

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtime"))
from tiny_checkpoint import save_tiny_checkpoint  # noqa: E402

TS = get_typestore(Stores.ROS2_KILTED)
TOPICS = {"/cam": "sensor_msgs/msg/Image", "/js": "sensor_msgs/msg/JointState"}


def record_small_bag(path: Path) -> Path:
    """30 joint states and 32x24 images, written by the project's recorder (MCAP with chunk CRCs)."""
    image, joint_state = TS.types["sensor_msgs/msg/Image"], TS.types["sensor_msgs/msg/JointState"]
    stamp, header = TS.types["builtin_interfaces/msg/Time"], TS.types["std_msgs/msg/Header"]
    rng = np.random.default_rng(0)
    with BagWriter(path, storage="mcap", typestore=TS) as bag:
        for name, msgtype in TOPICS.items():
            bag.add_topic(name, msgtype)
        for k in range(30):
            t = 10**18 + k * 33_333_333
            head = header(stamp=stamp(sec=t // 10**9, nanosec=t % 10**9), frame_id="cam")
            bag.write("/cam", t, TS.serialize_cdr(image(
                header=head, height=24, width=32, encoding="rgb8", is_bigendian=0, step=96,
                data=rng.integers(0, 256, 24 * 32 * 3, dtype=np.uint8)), TOPICS["/cam"]))
            bag.write("/js", t, TS.serialize_cdr(joint_state(
                header=head, name=["a"], position=np.array([k / 10]), velocity=np.zeros(0), effort=np.zeros(0)),
                TOPICS["/js"]))
    return path


@pytest.fixture(scope="module")
def recorded_bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return record_small_bag(tmp_path_factory.mktemp("fuzz_bag") / "bag")


@st.composite
def damage(draw: st.DrawFn, size: int) -> list[tuple[str, int, bytes]]:
    """(what, offset, bytes): overwrite ranges, or cut the file, or drop metadata.yaml."""
    kind = draw(st.sampled_from(["overwrite", "overwrite", "overwrite", "truncate", "no_metadata"]))
    if kind == "truncate":
        return [("truncate", draw(st.integers(0, size - 1)), b"")]
    if kind == "no_metadata":
        return [("no_metadata", 0, b"")]
    return [("overwrite", draw(st.integers(0, size - 1)), draw(st.binary(min_size=1, max_size=64)))
            for _ in range(draw(st.integers(1, 3)))]


def read_or_refuse(bag: Path) -> None:
    try:
        check_bag(bag)
        read_topics(bag, TOPICS)
    except BagReadError as error:
        assert str(bag) in str(error) or bag.name in str(error), f"the error must name the bag: {error}"


@FUZZ
@given(data=st.data())
def test_damaged_recorded_bag(recorded_bag: Path, data: st.DataObject) -> None:
    mcap = next(recorded_bag.glob("*.mcap"))
    changes = data.draw(damage(mcap.stat().st_size))
    with tempfile.TemporaryDirectory() as tmp:
        bag = Path(tmp) / "bag"
        shutil.copytree(recorded_bag, bag)
        target = bag / mcap.name
        blob = bytearray(target.read_bytes())
        for what, offset, chunk in changes:
            if what == "truncate":
                del blob[offset:]
            elif what == "no_metadata":
                (bag / "metadata.yaml").unlink()
            else:
                blob[offset:offset + len(chunk)] = chunk
        target.write_bytes(bytes(blob))
        read_or_refuse(bag)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("fuzz_checkpoint") / "pretrained_model")


JSON_FILES = ["config.json", "policy_preprocessor.json", "policy_postprocessor.json"]


@st.composite
def mutated_checkpoint(draw: st.DrawFn, folder: Path) -> dict[str, Any]:
    """{file name: new JSON document} for one to three changed values across the checkpoint's JSON files."""
    documents = {name: json.loads((folder / name).read_text()) for name in JSON_FILES}
    for _ in range(draw(st.integers(1, 3))):
        name = draw(st.sampled_from(JSON_FILES))
        paths = leaf_paths(documents[name])
        path = draw(st.sampled_from(paths))
        mutate(documents[name], path, draw(values), draw(st.booleans()))
    return documents


@pytest.mark.training
@FUZZ
@given(data=st.data())
def test_checkpoint_json(tiny_checkpoint: Path, data: st.DataObject) -> None:
    from koch_runtime.factory import load_runtime

    documents = data.draw(mutated_checkpoint(tiny_checkpoint))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "pretrained_model"
        shutil.copytree(tiny_checkpoint, folder)
        for name, document in documents.items():
            (folder / name).write_text(json.dumps(document, allow_nan=True))
        try:
            load_runtime(folder)
        except ConfigError as error:  # CheckpointError is one
            assert str(error)
