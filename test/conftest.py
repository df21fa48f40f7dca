"""Test set-up shared by every stage.

Puts each workspace package on sys.path (so pytest works with or without a sourced
install), points the config loader at config/, and gives every test session its own
ROS domain on localhost so parallel runs on one machine never see each other's topics.
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for package_dir in sorted(ROOT.glob("src/*/*/package.xml")):
    sys.path.insert(0, str(package_dir.parent))

os.environ.setdefault("KOCH_CONFIG_DIR", str(ROOT / "config"))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random(os.getpid()).randint(1, 100)))
