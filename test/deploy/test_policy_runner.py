"""The policy node's core: observation assembly, execute-k-then-replan, holds and limits.

The predictor here is a plain function standing in for the model, because these tests are
about scheduling and safety whatever a model outputs; the node test runs a real ACT.
"""

from __future__ import annotations

import math
import os
import threading
import time

import numpy as np
import pytest

from koch_bringup.ros_session import wait_for
from koch_common.resample import Align, StreamSpec
from koch_common.robot import load_koch
from koch_common.safety import InterventionKind, SafetyLimits
from koch_policy.chunk_policies import ExecuteKThenReplan
from koch_policy.runner import PolicyRunner, RunnerFault, RunnerIntervention, TickKind, resolve_trigger

KOCH = load_koch()
FPS = 30.0
STREAMS = {"observation.state": StreamSpec("observation.state", Align.HOLD, 0.1),
           "observation.images.head": StreamSpec("observation.images.head", Align.HOLD, 0.1)}


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
        assert runner.tick(now).kind is TickKind.HOLD  # requests inference, and never waits for the model
        model_may_finish.set()
        wait_for(lambda: runner.latencies_s, 5.0, "inference")
        output = runner.tick(now + 0.001)
        assert output.kind is TickKind.CHUNK and output.positions.shape == (10, 6)
        np.testing.assert_allclose(output.positions, np.linspace(np.zeros(6), target, 20)[:10], atol=1e-9)
    finally:
        runner.close()


@pytest.mark.skipif(len(getattr(os, "sched_getaffinity", lambda _: ())(0)) < 2, reason="needs two CPUs (Linux)")
def test_inference_runs_on_the_cpus_the_runtime_asks_for() -> None:
    """The node passes the runtime's `caller_cpus` (the core onnxruntime's pinned pool leaves free): the
    model is called there only, while the process's other threads keep every CPU. CPUs the process may
    not use leave the thread where it is, with the reason in last_error, and inference goes on."""
    cpus = os.sched_getaffinity(0)
    for wanted, expected in (({max(cpus)}, {max(cpus)}), ({max(cpus) + 4096}, cpus)):
        called_on: list[set[int]] = []

        def model(obs: dict[str, np.ndarray], called_on: list[set[int]] = called_on) -> np.ndarray:
            called_on.append(os.sched_getaffinity(0))
            return np.zeros((20, 6))

        runner = PolicyRunner(model, STREAMS, SafetyLimits.for_arm(KOCH.follower, KOCH.safety), FPS, 10,
                              worker_cpus=wanted)
        try:
            now = time.time()
            _feed(runner, now)
            runner.tick(now)
            wait_for(lambda called_on=called_on: called_on, 5.0, "inference")
            assert called_on == [expected] and os.sched_getaffinity(0) == cpus
            assert runner.last_error == ("" if wanted == expected else
                                         f"inference thread not pinned to CPUs {sorted(wanted)}: "
                                         "[Errno 22] Invalid argument")
        finally:
            runner.close()


def test_garbage_is_collected_after_each_chunk_not_while_inferring() -> None:
    """Python starts a collection wherever allocations pass gen0's threshold (up to ~2 ms measured on the
    chunk's path); the runner collects the young generations after each chunk, so a model that leaves
    200 objects alive per call (a third of the threshold) never sees one start while it runs."""
    import gc

    kept: list[dict] = []
    in_model = [False]
    started_in_model: list[int] = []

    def model(obs: dict[str, np.ndarray]) -> np.ndarray:
        in_model[0] = True
        kept.extend({"step": i} for i in range(200))
        in_model[0] = False
        return np.zeros((20, 6))

    def on_collection(phase: str, info: dict) -> None:
        if phase == "start" and in_model[0]:
            started_in_model.append(info["generation"])

    runner = _runner(model)
    gc.callbacks.append(on_collection)
    try:
        for i in range(20):  # without the runner's collections, Python's would start every ~3 chunks
            runner.reset()
            now = time.time()
            _feed(runner, now)
            runner.tick(now)
            wait_for(lambda i=i: runner.inferences > i, 5.0, f"inference {i + 1}")
        assert started_in_model == [] and len(kept) == 4000
    finally:
        gc.callbacks.remove(on_collection)
        runner.close()


def test_stale_observation_holds_the_measured_position() -> None:
    runner = _runner(lambda obs: np.ones((20, 6)))
    try:
        now = time.time()
        measured = np.array([0.2, 0.1, 0.0, 0.0, 0.0, 0.0])
        _feed(runner, now, measured)
        runner.tick(now)
        wait_for(lambda: runner.latencies_s, 5.0, "inference")
        assert runner.tick(now + 0.01).kind is TickKind.CHUNK
        # no new messages: 0.1 s later every stream is stale
        output = runner.tick(now + 0.2)
        assert output.kind is TickKind.STALE and "stale" in output.reason
        np.testing.assert_allclose(output.positions[0], measured)
        assert runner.limits.interventions[RunnerIntervention.STALE_OBSERVATION] == 1
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
        assert runner.tick(now + 0.01).kind is TickKind.HOLD
    finally:
        runner.close()


def test_the_camera_frame_after_a_wanting_tick_starts_inference_on_itself() -> None:
    seen: list[dict[str, np.ndarray]] = []

    def model(obs: dict[str, np.ndarray]) -> np.ndarray:
        seen.append(obs)
        return np.tile(obs["observation.state"], (20, 1))

    runner = PolicyRunner(model, STREAMS, SafetyLimits.for_arm(KOCH.follower, KOCH.safety), FPS, 10,
                          trigger=resolve_trigger("auto", STREAMS))
    assert runner.trigger == "observation.images.head"
    try:
        now = time.time()
        _feed(runner, now)
        assert runner.tick(now).kind is TickKind.HOLD  # wants a chunk: armed, nothing started yet
        time.sleep(0.05)
        assert runner.inferences == 0
        runner.push("observation.state", now + 0.01, np.full(6, 0.1))  # not the trigger
        time.sleep(0.05)
        assert runner.inferences == 0
        frame = np.full((4, 4, 3), 7, np.uint8)
        runner.push("observation.images.head", now + 0.03, frame)  # the trigger: starts it at once
        wait_for(lambda: runner.inferences == 1, 5.0, "inference started by the frame")
        assert seen[0]["observation.images.head"] is frame  # the frame that arrived, not the tick's
        np.testing.assert_array_equal(seen[0]["observation.state"], np.full(6, 0.1))
        output = runner.tick(now + 0.03 + 1.5 / FPS)
        # the plan starts at the frame's stamp (1.5 periods ago: one point is past), not at the tick's
        assert output.kind is TickKind.CHUNK and len(output.positions) == 9
    finally:
        runner.close()


def test_without_a_trigger_frame_the_next_tick_starts_inference() -> None:
    runner = PolicyRunner(lambda obs: np.zeros((20, 6)), STREAMS, SafetyLimits.for_arm(KOCH.follower, KOCH.safety),
                          FPS, 10, trigger="observation.images.head")
    try:
        now = time.time()
        _feed(runner, now)
        runner.tick(now)  # armed
        runner.push("observation.state", now + 0.02, np.zeros(6))  # the camera dropped a frame
        time.sleep(0.05)
        assert runner.inferences == 0
        runner.tick(now + 1 / FPS)  # a period later: the tick starts it with what it has
        wait_for(lambda: runner.inferences == 1, 5.0, "inference started by the tick")
    finally:
        runner.close()


def test_a_chunk_inferred_across_a_reset_is_never_executed() -> None:
    may_finish = threading.Event()

    def slow(obs: dict[str, np.ndarray]) -> np.ndarray:
        may_finish.wait(5.0)
        return np.zeros((20, 6))

    runner = _runner(slow)
    try:
        now = time.time()
        _feed(runner, now)
        runner.tick(now)  # starts inference (no trigger)
        wait_for(lambda: runner._busy and runner._request is None, 5.0, "the worker took the request")
        runner.reset()  # e.g. the e-stop was released while the model ran
        may_finish.set()
        wait_for(lambda: runner.latencies_s, 5.0, "inference")
        time.sleep(0.05)
        assert runner.tick(now + 0.01).kind is TickKind.HOLD  # the old chunk was dropped; a new one is requested
    finally:
        runner.close()


def test_inference_trigger_parameter() -> None:
    assert resolve_trigger("auto", ["observation.state", "observation.images.wrist", "observation.images.head"]) \
        == "observation.images.wrist"
    assert resolve_trigger("auto", ["observation.state"]) is None  # no camera: the tick starts inference
    assert resolve_trigger("tick", STREAMS) is None
    assert resolve_trigger("observation.state", STREAMS) == "observation.state"
    with pytest.raises(ValueError, match="inference_trigger='camera'.*auto, tick"):
        resolve_trigger("camera", STREAMS)


# -- faults: every failure inside a tick or in the model's output becomes a counted hold ------------------------

MEASURED = np.array([0.2, 0.1, -0.1, 0.0, 0.05, 0.3])


def _idle(runner: PolicyRunner, inferences: int = 1) -> None:
    """Wait until `inferences` chunks came back and the worker accepted or dropped the last one."""
    wait_for(lambda: runner.inferences >= inferences and not runner._busy, 5.0, f"inference {inferences}")


def _held(output, position: np.ndarray) -> None:
    assert output.positions is not None and output.positions.shape == (1, 6), output
    np.testing.assert_allclose(output.positions[0], position, atol=1e-9)


def _only_fault(runner: PolicyRunner, kind: RunnerFault, count: int = 1) -> None:
    assert runner.faults[kind] == count, dict(runner.faults)
    assert sum(runner.faults.values()) == count, dict(runner.faults)


BAD_MODEL_OUTPUTS = {
    "one_dimensional": (np.zeros(6), RunnerFault.MODEL_SHAPE),  # one point without its steps axis
    "wrong_joint_count": (np.zeros((20, 5)), RunnerFault.MODEL_SHAPE),
    "batch_axis_left_in": (np.zeros((1, 20, 6)), RunnerFault.MODEL_SHAPE),
    "no_steps": (np.zeros((0, 6)), RunnerFault.MODEL_SHAPE),
    "nan": (np.where(np.arange(6) == 2, np.nan, 0.1) * np.ones((20, 1)), RunnerFault.MODEL_NON_FINITE),
    "inf": (np.full((20, 6), np.inf), RunnerFault.MODEL_NON_FINITE),
    "complex": (np.zeros((20, 6), complex), RunnerFault.MODEL_DTYPE),
    "strings": (np.full((20, 6), "0.1", object), RunnerFault.MODEL_DTYPE),
    "none": (None, RunnerFault.MODEL_DTYPE),
}


@pytest.mark.parametrize("name", sorted(BAD_MODEL_OUTPUTS))
def test_a_bad_model_output_is_dropped_counted_and_held(name: str) -> None:
    """Checked where the worker accepts it, so it is never queued: the arm holds the measured position
    (the safety layer never sees it: no `non_finite` intervention), the fault is counted by kind and
    its reason logged once however often the model repeats it."""
    bad, kind = BAD_MODEL_OUTPUTS[name]
    may_return = threading.Semaphore(0)  # one inference finishes per release: the counts are exact

    def model(obs: dict[str, np.ndarray]) -> np.ndarray:
        may_return.acquire(timeout=5.0)
        return bad

    logged: list[str] = []
    runner = _runner(model)
    runner.log = logged.append
    try:
        now = time.time()
        _feed(runner, now, MEASURED)
        runner.tick(now)
        may_return.release()
        _idle(runner)
        output = runner.tick(now + 0.001)  # and asks for the next chunk
        assert output.kind is TickKind.HOLD
        _held(output, MEASURED)
        _only_fault(runner, kind)
        assert runner.limits.interventions[InterventionKind.NON_FINITE] == 0
        for k in range(1, 4):  # the model keeps failing the same way: counted each time, logged once
            may_return.release()
            _idle(runner, k + 1)
            _feed(runner, now + k / FPS, MEASURED)
            _held(runner.tick(now + k / FPS + 0.001), MEASURED)
        _only_fault(runner, kind, 4)
        assert len(logged) == 1 and logged[0].startswith(kind), logged
        assert runner.last_fault == logged[0]
    finally:
        for _ in range(3):
            may_return.release()
        runner.close()


def _executing(runner: PolicyRunner, now: float):
    """Feed MEASURED, run one inference and return the first tick that executes its chunk."""
    _feed(runner, now, MEASURED)
    runner.tick(now)
    _idle(runner)
    output = runner.tick(now + 0.001)
    assert output.kind is TickKind.CHUNK
    return output


def test_a_non_finite_measured_state_holds_the_last_commanded_position() -> None:
    """The measurement cannot be trusted, so neither can a hold of it: the arm is held where it was last
    commanded to be at this instant (what it was tracking), not sent towards an older measurement."""
    target = MEASURED + 0.2
    runner = _runner(lambda obs: np.linspace(MEASURED, target, 20))
    try:
        now = time.time()
        first = _executing(runner, now)
        bad = MEASURED.copy()
        bad[3] = np.nan
        _feed(runner, now + 1 / FPS, bad)
        output = runner.tick(now + 0.001 + 1 / FPS)
        assert output.kind is TickKind.FAULT and "not finite" in output.reason
        _held(output, first.positions[1])
        _only_fault(runner, RunnerFault.STATE_NON_FINITE)
        _feed(runner, now + 2 / FPS, MEASURED)
        assert runner.tick(now + 0.001 + 2 / FPS).kind is not TickKind.FAULT  # a good state again: no fault
    finally:
        runner.close()


def test_a_non_finite_first_state_sends_nothing() -> None:
    """No valid measurement and nothing commanded since the start: there is no safe position to send,
    so nothing is (the driver keeps holding its own goal)."""
    runner = _runner(lambda obs: np.zeros((20, 6)))
    try:
        now = time.time()
        _feed(runner, now, np.full(6, np.nan))
        output = runner.tick(now)
        assert output.kind is TickKind.FAULT and output.command is None
        _only_fault(runner, RunnerFault.STATE_NON_FINITE)
        time.sleep(0.05)
        assert runner.inferences == 0  # never inferred from a broken state
    finally:
        runner.close()


def test_a_measured_state_of_the_wrong_length_holds_the_last_finite_measurement() -> None:
    runner = _runner(lambda obs: np.zeros((20, 6)))
    try:
        now = time.time()
        _feed(runner, now, MEASURED)
        _held(runner.tick(now), MEASURED)  # waiting for a chunk: holds (and so commands) MEASURED
        _feed(runner, now + 1 / FPS, np.zeros(5))
        output = runner.tick(now + 1 / FPS)
        assert output.kind is TickKind.FAULT and "5" in output.reason
        _held(output, MEASURED)
        _only_fault(runner, RunnerFault.STATE_SHAPE)
    finally:
        runner.close()


@pytest.mark.parametrize("bad_time", ["backwards", "nan", "inf"])
def test_a_clock_going_backwards_or_non_finite_holds_the_measured_position(bad_time: str) -> None:
    runner = _runner(lambda obs: np.linspace(MEASURED, MEASURED + 0.2, 20))
    try:
        now = time.time()
        _executing(runner, now)
        when = {"backwards": now - 0.5, "nan": math.nan, "inf": math.inf}[bad_time]
        output = runner.tick(when)
        assert output.kind is TickKind.FAULT and RunnerFault.CLOCK in output.reason
        _held(output, MEASURED)
        _only_fault(runner, RunnerFault.CLOCK)
        _feed(runner, now + 2 / FPS, MEASURED)
        assert runner.tick(now + 2 / FPS).kind is not TickKind.FAULT  # time goes on: the runner does too
    finally:
        runner.close()


def test_a_one_dimensional_chunk_past_the_worker_is_refused_by_the_safety_layer() -> None:
    """Defence in depth: a (n_joints,) array reaching the safety layer is refused (not read as one
    point), and the runner holds."""
    runner = _runner(lambda obs: np.zeros((20, 6)))
    try:
        now = time.time()
        _feed(runner, now, MEASURED)
        runner.queue.accept(np.full(6, 0.25), now)  # straight into the plan, as a buggy chunk policy might
        output = runner.tick(now)
        assert output.kind is TickKind.FAULT
        _held(output, MEASURED)
        _only_fault(runner, RunnerFault.MODEL_SHAPE)
    finally:
        runner.close()


def test_anything_else_raising_in_a_tick_holds_as_an_internal_fault() -> None:
    runner = _runner(lambda obs: np.zeros((20, 6)))
    try:
        now = time.time()
        _feed(runner, now, MEASURED)

        def broken(now: float) -> np.ndarray:
            raise RuntimeError("a bug")

        runner.queue.due = broken  # type: ignore[method-assign]
        output = runner.tick(now)
        assert output.kind is TickKind.FAULT and "RuntimeError: a bug" in output.reason
        _held(output, MEASURED)
        _only_fault(runner, RunnerFault.INTERNAL)
    finally:
        runner.close()


def test_a_chunk_is_traced_from_its_frame_to_the_first_tick_that_carries_it() -> None:
    """The trace starts at the trigger frame's stamp and arrival, and goes to the tick that first executes
    the chunk: once, and never to a tick that read the queue before the chunk landed."""
    model_may_finish = threading.Event()

    def model(obs: dict[str, np.ndarray]) -> np.ndarray:
        model_may_finish.wait(5.0)
        return np.tile(obs["observation.state"], (20, 1))

    runner = PolicyRunner(model, STREAMS, SafetyLimits.for_arm(KOCH.follower, KOCH.safety), FPS, 10,
                          trigger="observation.images.head")
    try:
        now = time.time()
        _feed(runner, now - 0.01)
        runner.tick(now)  # armed
        arrived = time.time()
        runner.push("observation.images.head", now - 0.005, np.zeros((4, 4, 3), np.uint8))  # starts inference
        held = runner.tick(now + 0.001)  # while the model runs: a hold, nothing to trace
        assert held.kind is TickKind.HOLD and runner.take_trace(held) is None
        model_may_finish.set()
        wait_for(lambda: runner.inferences == 1, 5.0, "inference")
        first = runner.tick(time.time())
        trace = runner.take_trace(first)
        assert first.kind is TickKind.CHUNK and trace is not None
        assert trace.capture == now - 0.005 and arrived <= trace.arrival <= trace.inference_start
        assert trace.inference_start <= trace.inference_end <= time.time()
        assert runner.take_trace(runner.tick(time.time())) is None  # the next tick carries no new chunk
    finally:
        runner.close()


def test_under_rtc_a_guidable_model_is_given_the_plan_from_the_observation_time() -> None:
    """rtc with a flow-matching policy: each inference after the first gets the current plan's actions from
    its observation time on and the delay in ticks; another chunk policy, chosen at run time, gets none."""
    ramp = np.linspace(np.zeros(6), np.full(6, 0.2), 30)
    guided: list[tuple[np.ndarray, int]] = []

    def plain(obs: dict[str, np.ndarray]) -> np.ndarray:
        return ramp.copy()

    def with_prefix(obs: dict[str, np.ndarray], prefix: np.ndarray, delay: int) -> np.ndarray:
        guided.append((prefix.copy(), delay))
        return ramp.copy()

    runner = PolicyRunner(plain, STREAMS, SafetyLimits.for_arm(KOCH.follower, KOCH.safety), FPS, 10,
                          chunk_policy="rtc", predict_guided=with_prefix)
    try:
        t0 = time.time()
        _feed(runner, t0)
        runner.tick(t0)
        wait_for(lambda: runner.inferences == 1, 5.0, "the first chunk")
        assert guided == [], "no plan yet: the first chunk is not guided"
        t = t0 + 20 / FPS  # fewer than replan_threshold of the chunk left: the next tick asks again
        _feed(runner, t)
        runner.tick(t)
        wait_for(lambda: runner.inferences == 2, 5.0, "the second chunk")
        prefix, delay = guided[-1]
        np.testing.assert_allclose(prefix, ramp[20:], atol=1e-9)  # the plan from the observation time on
        assert 1 <= delay <= len(prefix)

        runner.set_chunk_policy("latest_only")
        t += 20 / FPS
        _feed(runner, t)
        runner.tick(t)
        wait_for(lambda: runner.inferences == 3, 5.0, "a chunk under latest_only")
        assert len(guided) == 1, "only rtc guides"
    finally:
        runner.close()
