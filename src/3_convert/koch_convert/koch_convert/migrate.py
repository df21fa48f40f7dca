"""lerobot_migrate_v21: a LeRobot v2.1 dataset folder -> a new v3.0 dataset folder, safely.

    lerobot_migrate_v21 --source datasets/old_v21 --output datasets/old_v30

Wraps `lerobot.datasets.v30.convert_dataset_v21_to_v30.convert_dataset` (LeRobot 0.4.4), which
converts in place and renames folders as it goes. Here it runs on a copy in a work folder
beside the output, never touches the source and never the Hub, and the result is moved to
`--output` only after it opens as a v3.0 dataset.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

V21 = "v2.1"


class MigrationError(ValueError):
    pass


def migrate_v21_to_v30(source: Path, output: Path) -> Path:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local migration must never reach the Hub
    from lerobot.datasets.lerobot_dataset import LeRobotDatasetMetadata
    from lerobot.datasets.v30.convert_dataset_v21_to_v30 import convert_dataset

    source, output = Path(source), Path(output)
    info_path = source / "meta" / "info.json"
    if not info_path.is_file():
        raise MigrationError(f"{source} is not a LeRobot dataset (no meta/info.json)")
    version = json.loads(info_path.read_text()).get("codebase_version")
    if version != V21:
        raise MigrationError(f"{source} has codebase_version {version!r}; this migrates {V21} datasets only")
    if output.exists():
        raise MigrationError(f"{output} already exists; choose another --output")
    output.parent.mkdir(parents=True, exist_ok=True)
    work = output.parent / f".{output.name}.migrating-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    try:
        shutil.copytree(source, work / output.name)
        # convert_dataset works on `root / repo_id`; with the folder name as repo id that is our copy.
        convert_dataset(output.name, root=work, push_to_hub=False, force_conversion=True)
        migrated = work / output.name
        meta = LeRobotDatasetMetadata(output.name, root=migrated)
        if meta.info.get("codebase_version") != "v3.0":
            raise MigrationError(f"LeRobot's migration produced version {meta.info.get('codebase_version')!r}")
        migrated.rename(output)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lerobot_migrate_v21", description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True, type=Path, help="the v2.1 dataset folder (left unchanged)")
    parser.add_argument("--output", required=True, type=Path, help="where the v3.0 dataset is written")
    args = parser.parse_args(argv)
    try:
        out = migrate_v21_to_v30(args.source, args.output)
    except MigrationError as err:
        print(f"lerobot_migrate_v21: error: {err}", file=sys.stderr)
        return 1
    print(f"migrated {args.source} -> {out} (LeRobot v3.0)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
