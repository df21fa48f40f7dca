"""Starts a node graph from `koch_bringup.graph` as processes, the way `ros2 launch` does.

Each node runs its installed executable (`<prefix>/lib/<package>/<executable>` from
AMENT_PREFIX_PATH, as `ros2 run` finds it) with `--ros-args`: a parameters file, the node
name, the namespace and the remappings, exactly what launch_ros passes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import yaml

from koch_bringup.graph import NodeSpec


class LaunchError(RuntimeError):
    pass


def find_executable(package: str, executable: str) -> Path:
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        candidate = Path(prefix) / "lib" / package / executable
        if prefix and candidate.is_file():
            return candidate
    raise LaunchError(
        f"executable {executable!r} of package {package!r} not found on AMENT_PREFIX_PATH; "
        "build the workspace (colcon build --symlink-install) and source install/setup.bash"
    )


def ros_arguments(spec: NodeSpec, params_file: Path) -> list[str]:
    args = ["--ros-args", "-r", f"__node:={spec.name}"]
    if spec.namespace:
        args += ["-r", f"__ns:=/{spec.namespace}"]
    for source, target in spec.remappings:
        args += ["-r", f"{source}:={target}"]
    if spec.parameters:
        args += ["--params-file", str(params_file)]
    return args


class GraphProcess:
    """A running graph; stop() sends SIGINT like Ctrl-C in `ros2 launch`, then waits."""

    def __init__(self, specs: list[NodeSpec], log_dir: Path | None = None) -> None:
        self.specs = specs
        self._tmp = tempfile.TemporaryDirectory(prefix="koch_launch_")
        self.log_dir = Path(log_dir or self._tmp.name)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.processes: list[tuple[NodeSpec, subprocess.Popen]] = []

    def start(self) -> GraphProcess:
        for spec in self.specs:
            params_file = Path(self._tmp.name) / f"{spec.fully_qualified_name.strip('/').replace('/', '__')}.yaml"
            params_file.write_text(yaml.safe_dump({spec.fully_qualified_name: {"ros__parameters": spec.parameters}}))
            command = [str(find_executable(spec.package, spec.executable)), *ros_arguments(spec, params_file)]
            log = open(self.log_dir / f"{spec.namespace or 'root'}_{spec.name}.log", "w")  # noqa: SIM115
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
            self.processes.append((spec, process))
        return self

    def check_alive(self) -> None:
        for spec, process in self.processes:
            if process.poll() is not None:
                log = (self.log_dir / f"{spec.namespace or 'root'}_{spec.name}.log").read_text()[-2000:]
                raise LaunchError(f"node {spec.fully_qualified_name} exited with {process.returncode}:\n{log}")

    def stop(self, timeout: float = 10.0) -> None:
        for _, process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + timeout
        for _, process in self.processes:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()
        self._tmp.cleanup()

    def __enter__(self) -> GraphProcess:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    """`launch_graph deploy checkpoint:=PATH sim:=true`: run a graph until Ctrl-C."""
    import argparse

    from koch_bringup import graph

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("graph", choices=["sim_robot", "deploy"])
    parser.add_argument("arguments", nargs="*", help="name:=value launch arguments")
    args = parser.parse_args(argv)
    kwargs = dict(a.split(":=", 1) for a in args.arguments)
    if args.graph == "sim_robot":
        specs = graph.sim_robot(int(kwargs.get("seed", 0)))
    else:
        specs = graph.deploy(kwargs["checkpoint"], kwargs.get("device", "cpu"),
                             kwargs.get("sim", "true") == "true", int(kwargs.get("seed", 0)),
                             kwargs.get("enabled", "false") == "true")
    with GraphProcess(specs) as running:
        print(f"running {len(specs)} nodes; logs in {running.log_dir}; Ctrl-C to stop")
        try:
            while True:
                running.check_alive()
                time.sleep(1.0)
        except KeyboardInterrupt:
            pass
