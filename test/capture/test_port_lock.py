"""One owner per serial port: a second bus, driver or process on a port in use is refused at once.

Two drivers on one port both connected and fought over the arm (each writing its own goals
between the other's reads). The bus now locks the port when it opens it; the second opener
gets one line naming the port and the PID of the process holding it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from koch_common.dynamixel_models import model_by_name
from koch_common.robot import load_koch
from koch_common.safety import SafetyLimits
from koch_driver.bus import BusError, DynamixelBus
from koch_driver.driver import ArmDriver
from koch_sim.dxl_emulator import DynamixelBusEmulator

KOCH = load_koch()
ARM = KOCH.follower


@pytest.fixture
def link(tmp_path: Path) -> Iterator[Path]:
    servos = [(j.id, model_by_name(j.model).model_number) for j in ARM.joints]
    link = tmp_path / "follower"
    with DynamixelBusEmulator(servos, link_path=str(link)):
        yield link


def _bus(port: Path | str) -> DynamixelBus:
    return DynamixelBus(str(port), ARM.baudrate, ARM.ids, {j.id: j.model for j in ARM.joints})


def test_a_second_bus_on_the_same_port_is_refused_naming_the_port_and_the_holder(link: Path) -> None:
    device = os.path.realpath(link)
    with _bus(link) as first:
        first.ping_all()
        # through the link and through the pty's own name alike: the lock is on the device
        for port in (link, device):
            with pytest.raises(BusError, match=rf"serial port {port} .*is in use by PID {os.getpid()}\b"):
                _bus(port).open()
        first.read_state()  # the refused opener disturbed nothing
    with _bus(device) as again:  # closed: the port is free again
        again.ping_all()


def test_the_holder_in_another_process_is_named(link: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\n"
         "from koch_driver.bus import DynamixelBus\n"
         f"bus = DynamixelBus({str(link)!r}, {ARM.baudrate}, [1])\n"
         "bus.open()\nprint('open', flush=True)\ntime.sleep(60)\n"],
        stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        with pytest.raises(BusError, match=rf"serial port {link} .*is in use by PID {holder.pid}\b"):
            _bus(link).open()
    finally:
        holder.kill()
        holder.wait(timeout=10)
    with _bus(link) as bus:  # the holder died: its lock went with it
        bus.ping_all()


def test_a_second_driver_fails_at_once_instead_of_fighting(link: Path) -> None:
    import dataclasses

    arm = dataclasses.replace(ARM, port=str(link))
    first = ArmDriver(arm, SafetyLimits.for_arm(arm, KOCH.safety))
    first.connect(timeout_s=5.0)
    try:
        second = ArmDriver(arm, SafetyLimits.for_arm(arm, KOCH.safety))
        started = time.monotonic()
        with pytest.raises(BusError, match=rf"{link} .*in use by PID {os.getpid()}"):
            second.connect(timeout_s=5.0)  # not retried: a held port does not free itself
        assert time.monotonic() - started < 2.0
        assert not second.connected
        assert first.step(0.02) is not None
    finally:
        first.close()


@pytest.mark.dds
def test_a_second_driver_node_exits_with_one_line(link: Path) -> None:
    with _bus(link):
        result = subprocess.run(
            [sys.executable, "-c", "from koch_driver.driver_node import main; main()",
             "--ros-args", "-p", f"port:={link}", "-p", "connect_timeout_s:=5.0"],
            capture_output=True, text=True, timeout=120, env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"serial port {link}" in lines[0] and f"PID {os.getpid()}" in lines[0], result.stderr
