"""`expert_check`, the README's command for the scripted expert's success rate, on the live graph.

One episode each of the two tasks the other tests do not play through the bus (pick_color runs in
test_graph_processes): the expert as leader arm, teleop, the follower driver on the emulator's pty
and MuJoCo behind it, exactly the record graph without cameras or a recorder.
"""

from __future__ import annotations

import subprocess

import pytest

from koch_bringup.launcher import find_executable

pytestmark = pytest.mark.dds


@pytest.mark.parametrize("task", ["pick_place", "pick_taller"])
def test_expert_check_reports_a_successful_episode(task: str) -> None:
    command = [str(find_executable("koch_bringup", "expert_check")), "--task", task, "--episodes", "1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"expert success on {task}: 1/1 = 100%" in result.stdout, result.stdout + result.stderr
