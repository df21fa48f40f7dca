"""The policy node's core: observation assembly, execute-k-then-replan, holds and limits.

The predictor here is a plain function standing in for the model, because these tests are
about scheduling and safety whatever a model outputs; the node test runs a real ACT.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from koch_bringup.ros_session import wait_for
from koch_common.resample import StreamSpec
from koch_common.robot import load_koch
from koch_common.safety import SafetyLimits
from koch_policy.chunk_policies import ExecuteKThenReplan
from koch_policy.runner import PolicyRunner

KOCH = load_koch()
FPS = 30.0
STREAMS = {"observation.state": StreamSpec("observation.state", "hold", 0.1),
           "observation.images.head": StreamSpec("observation.images.head", "hold", 0.1)}


def _runner(predict, n_action_steps: int = 10) -> PolicyRunner:
    return PolicyRunner(predict, STREAMS, SafetyLimits.for_arm(KOCH.follower, KOCH.safety), FPS, n_action_steps)


def _feed(runner: PolicyRunner, t: float, state: np.ndarray | None = None) -> None:
    runner.push("observation.state", t, np.zeros(6) if state is None else state)
    runner.push("observation.images.head", t, np.zeros((4, 4, 3), np.uint8))


def test_chunk_queue_serves_due_actions_and_asks_to_replan_in_time() -> None:
    queue = ExecuteKThenReplan(FPS, n_action_steps=10)
    assert queue.due(0.0) is None and queue.needs_inference(0.0, lead_ticks=2)
    chunk = np.arange(20)[:, None] * np.ones((1, 6))
    queue.accept(chunk, t_obs=1.0)
    np.testing.assert_array_equal(queue.due(1.0)[:, 0], np.arange(10))
    np.testing.assert_array_equal(queue.due(1.0 + 3 / FPS)[:, 0], np.arange(3, 10))
    assert not queue.needs_inference(1.0 + 3 / FPS, lead_ticks=2)
    assert queue.needs_inference(1.0 + 8 / FPS, lead_ticks=2)
    assert queue.due(1.0 + 10 / FPS) is None


def test_runner_publishes_the_models_chunk_from_the_observation_time() -> None:
    target = np.array([0.1, 0.05, 0.0, 0.0, 0.0, 0.0])
    model_may_finish = threading.Event()

    def slow_model(obs: dict[str, np.ndarray]) -> np.ndarray:
        model_may_finish.wait(5.0)
        return np.linspace(obs["observation.state"], target, 20)

    runner = _runner(slow_model)
    try:
        now = time.time()
        _feed(runner, now)
        assert runner.tick(now).kind == "hold"  # requests inference, and never waits for the model
        model_may_finish.set()
        wait_for(lambda: runner.latencies_s, 5.0, "inference")
        output = runner.tick(now + 0.001)
        assert output.kind == "chunk" and output.positions.shape == (10, 6)
        np.testing.assert_allclose(output.positions, np.linspace(np.zeros(6), target, 20)[:10], atol=1e-9)
    finally:
        runner.close()


def test_stale_observation_holds_the_measured_position() -> None:
    runner = _runner(lambda obs: np.ones((20, 6)))
    try:
        now = time.time()
        measured = np.array([0.2, 0.1, 0.0, 0.0, 0.0, 0.0])
        _feed(runner, now, measured)
        runner.tick(now)
        wait_for(lambda: runner.latencies_s, 5.0, "inference")
        assert runner.tick(now + 0.01).kind == "chunk"
        # no new messages: 0.1 s later every stream is stale
        output = runner.tick(now + 0.2)
        assert output.kind == "stale" and "stale" in output.reason
        np.testing.assert_allclose(output.positions[0], measured)
        assert runner.limits.interventions["stale_observation"] == 1
    finally:
        runner.close()


def test_garbage_from_the_model_never_leaves_the_limits() -> None:
    garbage = np.array([[np.nan, np.inf, -np.inf, 50.0, -50.0, 1e9]] * 20)
    runner = _runner(lambda obs: garbage)
    try:
        now = time.time()
        _feed(runner, now)
        runner.tick(now)
        wait_for(lambda: runner.latencies_s, 5.0, "inference")
        output = runner.tick(now + 0.001)
        limits = runner.limits
        assert np.all(np.isfinite(output.positions))
        assert np.all(output.positions >= limits.lower) and np.all(output.positions <= limits.upper)
        assert np.all(np.abs(output.positions[0]) <= limits.max_step + 1e-12)
    finally:
        runner.close()


def test_slow_inference_never_blocks_a_tick() -> None:
    def slow(obs):
        time.sleep(0.3)
        return np.zeros((20, 6))

    runner = _runner(slow)
    try:
        now = time.time()
        _feed(runner, now)
        started = time.perf_counter()
        for k in range(5):
            runner.tick(now + k / FPS)
        assert time.perf_counter() - started < 0.05
    finally:
        runner.close()


def test_a_failing_model_is_reported_and_holds() -> None:
    def broken(obs):
        raise RuntimeError("boom")

    runner = _runner(broken)
    try:
        now = time.time()
        _feed(runner, now)
        runner.tick(now)
        wait_for(lambda: runner.last_error, 5.0, "error report")
        assert "boom" in runner.last_error
        assert runner.tick(now + 0.01).kind == "hold"
    finally:
        runner.close()
