"""Starts a node graph from `koch_bringup.graph` as processes, the way `ros2 launch` does.

Each node runs its installed executable (`<prefix>/lib/<package>/<executable>` from
AMENT_PREFIX_PATH, as `ros2 run` finds it) with `--ros-args`: a parameters file, the node
name, the namespace and the remappings, exactly what launch_ros passes.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import yaml

from koch_bringup.graph import ROS_TOOL_PACKAGES, NodeSpec, ProcessSpec


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


def ros_tool_available(package: str, executable: str) -> bool:
    try:
        find_executable(package, executable)
        return True
    except LaunchError:
        return False


def ros_arguments(spec: NodeSpec, params_file: Path) -> list[str]:
    args = [*spec.arguments, "--ros-args", "-r", f"__node:={spec.name}"]
    if spec.namespace:
        args += ["-r", f"__ns:=/{spec.namespace}"]
    for source, target in spec.remappings:
        args += ["-r", f"{source}:={target}"]
    if spec.parameters:
        args += ["--params-file", str(params_file)]
    return args


def _default_sigint() -> None:
    # A graph started in the background of a script (`launch_graph ... &`) inherits an ignored
    # SIGINT; the nodes must still shut down cleanly on the SIGINT stop() sends.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupt(*_args: object) -> None:
    raise KeyboardInterrupt


class GraphProcess:
    """A running graph; stop() sends SIGINT like Ctrl-C in `ros2 launch`, then waits."""

    def __init__(self, specs: Sequence[NodeSpec | ProcessSpec], log_dir: Path | None = None) -> None:
        # Nodes that come with a ROS 2 install (robot_state_publisher, rviz2) are left out where
        # they are not installed, as on the PyPI-wheel machines: they only serve TF and views.
        self.skipped = [s for s in specs if isinstance(s, NodeSpec) and s.package in ROS_TOOL_PACKAGES
                        and not ros_tool_available(s.package, s.executable)]
        self.specs = [s for s in specs if s not in self.skipped]
        self._tmp = tempfile.TemporaryDirectory(prefix="koch_launch_")
        self.log_dir = Path(log_dir or self._tmp.name)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.processes: list[tuple[NodeSpec | ProcessSpec, subprocess.Popen]] = []

    def _command(self, spec: NodeSpec | ProcessSpec) -> list[str]:
        if isinstance(spec, ProcessSpec):
            if shutil.which(spec.command[0]) is None:
                raise LaunchError(f"{spec.name}: {spec.command[0]!r} is not on PATH; it needs a ROS 2 install "
                                  "(source /opt/ros/<distro>/setup.bash), or use recorder:=node")
            return list(spec.command)
        params_file = Path(self._tmp.name) / f"{spec.fully_qualified_name.strip('/').replace('/', '__')}.yaml"
        params_file.write_text(yaml.safe_dump({spec.fully_qualified_name: {"ros__parameters": spec.parameters}}))
        return [str(find_executable(spec.package, spec.executable)), *ros_arguments(spec, params_file)]

    def _log_path(self, spec: NodeSpec | ProcessSpec) -> Path:
        if isinstance(spec, ProcessSpec):
            return self.log_dir / f"{spec.name}.log"
        return self.log_dir / f"{spec.namespace or 'root'}_{spec.name}.log"

    def start(self) -> GraphProcess:
        commands = [(spec, self._command(spec)) for spec in self.specs]  # every error before anything starts
        for spec, command in commands:
            self.processes.append((spec, self._spawn(spec, command, "w")))
        return self

    def _spawn(self, spec: NodeSpec | ProcessSpec, command: list[str], mode: str) -> subprocess.Popen:
        log = open(self._log_path(spec), mode)  # noqa: SIM115
        try:
            env = {**os.environ, **spec.environment()} if isinstance(spec, NodeSpec) else None
            return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_default_sigint,
                                    env=env)
        finally:
            log.close()  # the child has its own descriptor

    @staticmethod
    def node_name(spec: NodeSpec | ProcessSpec) -> str:
        return spec.fully_qualified_name if isinstance(spec, NodeSpec) else spec.name

    def process(self, name: str) -> subprocess.Popen:
        """The running process of the node `name` (its fully qualified name, e.g. /head/camera)."""
        for spec, process in self.processes:
            if self.node_name(spec) == name:
                return process
        raise KeyError(f"no node {name!r} in this graph; it has {[self.node_name(s) for s, _ in self.processes]}")

    def restart(self, name: str, timeout: float = 10.0) -> subprocess.Popen:
        """Start node `name` again (stopping it first if it still runs), with the same command; its log goes on."""
        for index, (spec, process) in enumerate(self.processes):
            if self.node_name(spec) == name:
                if process.poll() is None:
                    process.send_signal(signal.SIGINT)
                    try:
                        process.wait(timeout)
                    except subprocess.TimeoutExpired:
                        process.kill()
                        process.wait()
                fresh = self._spawn(spec, self._command(spec), "a")
                self.processes[index] = (spec, fresh)
                return fresh
        raise KeyError(f"no node {name!r} in this graph")

    def check_alive(self) -> None:
        for spec, process in self.processes:
            if process.poll() is not None:
                log = self._log_path(spec).read_text()[-2000:]
                raise LaunchError(f"node {self.node_name(spec)} exited with {process.returncode}:\n{log}")

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


def parse_arguments(items: list[str]) -> dict[str, str]:
    values = {}
    for item in items:
        if ":=" not in item:
            raise SystemExit(f"launch argument {item!r} must be name:=value (as with ros2 launch)")
        name, value = item.split(":=", 1)
        values[name] = value
    return values


def main(argv: list[str] | None = None) -> None:
    """`launch_graph policy checkpoint:=PATH sim:=true`: run a launch file's graph until Ctrl-C."""
    import argparse

    from koch_bringup import graph

    names = [*graph.LAUNCH_ARGUMENTS, "sim_robot", "deploy"]
    epilog = "\n".join(f"{n}: " + ", ".join(f"{a.name}:={a.default or '...'}" for a in args)
                       for n, args in graph.LAUNCH_ARGUMENTS.items())
    parser = argparse.ArgumentParser(description=__doc__, epilog=epilog,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("graph", choices=names,
                        help="a launch file's graph (<graph>.launch.py); sim_robot and deploy are older names")
    parser.add_argument("arguments", nargs="*", help="name:=value launch arguments")
    parser.add_argument("--log-dir", type=Path, help="keep each node's output here (default: a temporary folder)")
    args = parser.parse_args(argv)
    values = parse_arguments(args.arguments)
    # Ctrl-C, `kill -INT` (also when started with `&` in a script) and `kill` all stop the nodes cleanly.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    # The two older names stay as they were: sim_robot = the sim without TF, deploy = policy with sim:=true.
    # Arguments left out leave the nodes' defaults (koch_bringup.graph passes only what differs).
    seed = int(values["seed"]) if "seed" in values else None
    if args.graph == "sim_robot":
        specs: list = graph.sim_robot(seed)
    elif args.graph == "deploy":
        enabled = values["enabled"] == "true" if "enabled" in values else None
        specs = graph.deploy(values["checkpoint"], values.get("sim", "true") == "true", seed,
                             device=values.get("device"), enabled=enabled)
    else:
        try:
            specs = graph.build(args.graph, values)
        except ValueError as error:
            raise SystemExit(str(error)) from None
    with GraphProcess(specs, args.log_dir) as running:
        for spec in running.skipped:
            print(f"left out {spec.package}/{spec.executable}: not installed (it comes with a ROS 2 install)")
        print(f"running {len(running.specs)} processes; logs in {running.log_dir}; Ctrl-C to stop", flush=True)
        try:
            while True:
                running.check_alive()
                time.sleep(1.0)
        except KeyboardInterrupt:
            pass
