"""Test set-up shared by every stage.

Puts each workspace package on sys.path (so pytest works with or without a sourced
install; without one, their package metadata too, for entry points: workspace_metadata.py),
points the config loader at config/, and gives every test session its own
ROS domain on localhost so parallel runs on one machine never see each other's topics.
"""

from __future__ import annotations

import os
import random
import socket
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for package_dir in sorted(ROOT.glob("src/*/*/package.xml")):
    sys.path.insert(0, str(package_dir.parent))

os.environ.setdefault("KOCH_CONFIG_DIR", str(ROOT / "config"))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")


def _unused_domain_id() -> int:
    """A ROS domain no other DDS participant on this host's network is using.

    Drawn from the OS's entropy: containers often give every CI job the same pid, so a
    pid-seeded draw sends parallel jobs into one domain, where they read each other's topics.
    A domain is skipped when its first participant's discovery port (UDP 7410 + 250 * domain,
    the port Fast DDS binds exclusively) is taken.
    """
    draw = random.SystemRandom()
    for _ in range(200):
        domain = draw.randint(1, 100)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind(("", 7410 + 250 * domain))
            except OSError:
                continue
        return domain
    raise RuntimeError("every ROS domain in 1..100 has a DDS participant on this host: stop stale ones")


if "ROS_DOMAIN_ID" not in os.environ:
    os.environ["ROS_DOMAIN_ID"] = str(_unused_domain_id())

# Test-only helpers (synthetic datasets) live beside this file.
sys.path.insert(0, str(Path(__file__).parent))

import pytest  # noqa: E402
from synthetic_reach import SyntheticDataset, build_reach_dataset  # noqa: E402
from workspace_metadata import provide_package_metadata  # noqa: E402

provide_package_metadata([package_xml.parent for package_xml in sorted(ROOT.glob("src/*/*/package.xml"))])


SLOW_MARKERS = ("dds", "video", "training")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that starts no DDS node, codes no video and trains nothing is a `unit` test."""
    for item in items:
        if not any(item.get_closest_marker(name) for name in SLOW_MARKERS):
            item.add_marker(pytest.mark.unit)


@pytest.fixture(scope="session")
def reach_dataset(tmp_path_factory: pytest.TempPathFactory) -> SyntheticDataset:
    """A real LeRobot v3.0 dataset: 3 episodes x 30 frames, h264 video, built once per session."""
    return build_reach_dataset(tmp_path_factory.mktemp("lerobot") / "koch_synthetic_reach")
