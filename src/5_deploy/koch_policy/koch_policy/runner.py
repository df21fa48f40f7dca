"""The policy node's ROS-free core: observation assembly, inference worker, safe chunks.

Messages arrive through `push` into the shared resampler's StreamBuffers (the converter
builds dataset frames with the same buffers). Each 30 Hz `tick` samples every stream at
"now": a stale or missing stream holds the measured position; otherwise the due part of
the current chunk is passed through the shared safety limits. Inference runs on a worker
thread, so a slow model never blocks a tick; it is wanted early by the measured latency.

When a tick wants a chunk, inference starts on the next message of the `trigger` stream (a
camera: the message that completes an observation), sampled at that message's stamp, so the
model sees the freshest frame and does not wait for the next tick (on average half a period);
if none arrives before the next tick (a late or dropped frame), that tick starts it with what it
has. Without a trigger the tick starts inference itself.

Every command a tick returns is a `SafeChunk` built by the safety layer, in this order of
precedence: latched e-stop (hold the position measured when it latched) > deadman lapsed >
stale/missing observation (hold the measured position) > the chunk policy's due actions.
`chunk_policy` picks how chunks merge (see `chunk_policies`) and can change while running.

Bad data never raises out of a tick: the loop that holds the arm must outlive whatever it is fed.
A model output that is not a finite (steps, n_joints) array of real numbers is dropped where the
worker accepts it (never queued); a measured state that is not finite or has the wrong length, a
tick time that is not finite or went backwards, and anything else raising inside a tick become a
`FAULT` tick. Each is counted by kind (`RunnerFault`, `faults`) and its reason logged once per
change; the tick holds the safest position known (`_safe_position`).
"""

from __future__ import annotations

import gc
import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from koch_common.enums import StrEnum
from koch_common.feature_mapping import IMAGE_PREFIX
from koch_common.latency_trace import ChunkTrace
from koch_common.realtime import pin_current_thread
from koch_common.resample import StreamBuffer, StreamSpec
from koch_common.safety import SafeChunk, SafetyLimits
from koch_policy.chunk_policies import (
    DEFAULT_CHUNK_POLICY,
    DEFAULT_REPLAN_THRESHOLD,
    ChunkPolicy,
    ChunkPolicyName,
    RealTimeChunking,
    make_chunk_policy,
)
from koch_policy.gate import GateState, SafetyGate

STATE_FEATURE = "observation.state"
# RTC's guidance for one inference: the plan's actions from t_obs on, and the ticks the inference will take.
Guidance = tuple[np.ndarray, int]


def resolve_trigger(choice: str, streams: Iterable[str]) -> str | None:
    """The `inference_trigger` parameter: "auto" -> the first camera stream (none without cameras),
    "tick" -> none (the 30 Hz tick starts inference), or an input stream's feature key."""
    streams = list(streams)
    if choice == "auto":
        return next((name for name in streams if name.startswith(IMAGE_PREFIX)), None)
    if choice == "tick":
        return None
    if choice not in streams:
        raise ValueError(f"inference_trigger={choice!r}: choose auto, tick or one of the inputs {streams}")
    return choice


class TickKind(StrEnum):
    """What a tick decided (in `tick`'s order of precedence after WAIT; a clock fault comes before WAIT, a
    joint state fault right after it)."""

    WAIT = "wait"  # no joint state yet: nothing to send
    ESTOP = "estop"  # e-stop latched: hold the position measured when it latched
    DEADMAN = "deadman"  # deadman lapsed: hold the measured position
    STALE = "stale"  # an observation stream is stale or missing: hold the measured position
    HOLD = "hold"  # no chunk yet: hold the measured position
    CHUNK = "chunk"  # the chunk policy's due actions, through the safety filter
    FAULT = "fault"  # a RunnerFault in this tick: hold the safest position known (`_safe_position`)


class RunnerFault(StrEnum):
    """A failure turned into a count (and, in a tick, a hold) instead of an exception: counted in
    `PolicyRunner.faults`, the value is the key on `/diagnostics` (`fault_<value>`). Model faults count once
    per chunk, observation faults once per message, the others once per tick."""

    MODEL_SHAPE = "model_shape"  # not (steps, n_joints): 1-D, a batch axis left in, wrong joint count, no steps
    MODEL_DTYPE = "model_dtype"  # not an array of real numbers: None, objects, strings, complex, bool
    MODEL_NON_FINITE = "model_non_finite"  # NaN or inf anywhere in the chunk
    MODEL_ERROR = "model_error"  # the model raised (its message: `last_error`)
    STATE_SHAPE = "state_shape"  # the measured joint state is not one number per joint
    STATE_NON_FINITE = "state_non_finite"  # NaN or inf in the measured joint state
    CLOCK = "clock"  # the tick time is not a finite number or went backwards
    INTERNAL = "internal"  # anything else raised inside a tick (a bug): the last-resort guard
    OBSERVATION = "observation"  # an input message the node could not decode: dropped (its stream may go stale)


class ModelOutputError(ValueError):
    """A model output that cannot be a chunk; `kind` says how (a `RunnerFault.MODEL_*`)."""

    def __init__(self, kind: RunnerFault, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def checked_chunk(output: object, n_joints: int) -> np.ndarray:
    """The model's output as a new (steps, n_joints) float64 array, or ModelOutputError saying what is wrong.

    Checked before anything reads it as a chunk: numpy would take a (n_joints,) array as one point, and
    float64 conversion would silently drop an imaginary part or parse strings."""
    try:
        array = np.asarray(output)
    except (ValueError, TypeError) as err:  # ragged nested lists
        raise ModelOutputError(RunnerFault.MODEL_DTYPE, f"the model returned {type(output).__name__} that is not "
                                                        f"an array ({err})") from None
    if array.dtype.kind not in "fiu":
        raise ModelOutputError(RunnerFault.MODEL_DTYPE, f"the model returned {type(output).__name__} of dtype "
                                                        f"{array.dtype}, not real numbers")
    if array.ndim != 2 or array.shape[1] != n_joints or array.shape[0] == 0:
        raise ModelOutputError(RunnerFault.MODEL_SHAPE, f"the model's chunk has shape {array.shape}, not "
                                                        f"(steps, {n_joints})")
    chunk = np.array(array, dtype=np.float64)  # a copy: the model may reuse its output buffer
    finite = np.isfinite(chunk)
    if not finite.all():
        joints = np.flatnonzero(~finite.all(axis=0)).tolist()
        raise ModelOutputError(RunnerFault.MODEL_NON_FINITE, f"the model's chunk has NaN/inf in joint(s) {joints}")
    return chunk


def _is_finite_time(t: object) -> bool:
    try:
        return math.isfinite(t)  # type: ignore[arg-type]
    except TypeError:
        return False


# A fault's reason is logged again only after the runner executed chunks this long without one.
FAULT_LOG_QUIET_S = 1.0


class RunnerIntervention(StrEnum):
    """Why the runner held instead of executing a chunk; counted in `SafetyLimits.interventions` beside the
    safety layer's own kinds (`koch_common.safety.InterventionKind`), the value is the key on `/diagnostics`."""

    ESTOP = "estop"
    DEADMAN = "deadman"
    STALE_OBSERVATION = "stale_observation"


_INTERVENTION = {TickKind.ESTOP: RunnerIntervention.ESTOP, TickKind.DEADMAN: RunnerIntervention.DEADMAN,
                 TickKind.STALE: RunnerIntervention.STALE_OBSERVATION}


@dataclass
class TickOutput:
    kind: TickKind
    command: SafeChunk | None  # safe position targets for now + k / fps
    reason: str = ""
    tick: int = 0
    prediction: np.ndarray | None = None  # the chunk policy's due actions before the safety filter
    chunks_accepted: int = 0  # chunks the queue had taken when this tick read it (`take_trace`)

    @property
    def positions(self) -> np.ndarray | None:
        return None if self.command is None else self.command.positions


class PolicyRunner:
    def __init__(
        self,
        predict: Callable[[dict[str, np.ndarray]], np.ndarray],
        streams: Mapping[str, StreamSpec],
        limits: SafetyLimits,
        fps: float,
        n_action_steps: int,
        clock: Callable[[], float] = time.time,
        chunk_policy: ChunkPolicyName | str = DEFAULT_CHUNK_POLICY,
        gate: SafetyGate | None = None,
        replan_threshold: float = DEFAULT_REPLAN_THRESHOLD,
        on_chunk: Callable[[], None] | None = None,
        trigger: str | None = None,
        worker_cpus: Collection[int] | None = None,
        predict_guided: Callable[[dict[str, np.ndarray], np.ndarray, int], np.ndarray] | None = None,
    ) -> None:
        if STATE_FEATURE not in streams:
            raise ValueError(f"the feature mapping must provide {STATE_FEATURE!r} for the measured position")
        if trigger is not None and trigger not in streams:
            raise ValueError(f"inference trigger {trigger!r} is not an input stream; choose one of {list(streams)}")
        self.predict = predict
        # A flow-matching policy's guided inference: used under the rtc chunk policy (chunk_policies).
        self.predict_guided = predict_guided
        self.buffers = {name: StreamBuffer(spec, maxlen=64) for name, spec in streams.items()}
        self.limits = limits
        for intervention in RunnerIntervention:  # every kind reported, zeros included
            limits.interventions.setdefault(intervention, 0)
        self.fps = fps
        self.n_action_steps = n_action_steps
        self.replan_threshold = replan_threshold
        self.queue: ChunkPolicy = make_chunk_policy(chunk_policy, fps, n_action_steps, replan_threshold)
        self.gate = gate or SafetyGate()
        self.clock = clock
        self.latencies_s: deque[float] = deque(maxlen=1000)
        self._recent_latencies_s: deque[float] = deque(maxlen=30)  # what lead_ticks plans with
        self._worst_recent_latency_s = 0.1  # before the first inference
        self.ticks = 0
        self.inferences = 0
        self.history: deque[tuple[int, float, TickKind]] = deque(maxlen=5000)  # (tick, now, kind): what ticks did
        self._last_command: tuple[float, SafeChunk] | None = None
        self.on_chunk = on_chunk  # called on the worker thread when a chunk lands (publish without waiting)
        # The inference thread's CPUs (the runtime's `caller_cpus`); None: wherever the OS puts it.
        self.worker_cpus = None if worker_cpus is None else frozenset(worker_cpus)
        self._lock = threading.Lock()
        self._request: tuple[dict[str, np.ndarray], float, int, ChunkTrace, Guidance | None] | None = None
        self._generation = 0  # bumped by reset: a chunk inferred before it is dropped
        self._busy = False
        self.trigger = trigger
        # Whose message a chunk's trace starts from: the trigger, else the first camera, else the state.
        self.trace_stream = trigger or next((n for n in streams if n.startswith(IMAGE_PREFIX)), STATE_FEATURE)
        self._arrivals: dict[str, tuple[float, float]] = {}  # feature -> (its latest stamp, clock at its arrival)
        self._accepted = 0  # chunks queued so far
        self._pending_trace: tuple[int, ChunkTrace] | None = None  # the latest queued chunk's, until published
        self._armed_since: float | None = None  # tick time since which a chunk waits for the trigger
        self._wake = threading.Condition(self._lock)
        self._stop = False
        self.last_error = ""
        self.n_joints = int(limits.lower.size)
        self.faults: Counter[str] = Counter({kind: 0 for kind in RunnerFault})  # every kind reported, zeros too
        self.last_fault = ""  # "<kind>: <reason>" of the latest fault; "" before the first
        self.log: Callable[[str], None] = lambda _message: None  # a fault's reason, once per change
        self._fault_lock = threading.Lock()  # faults come from the tick and from the worker
        self._logged_fault = ""
        self._fault_at = -math.inf  # time.monotonic() of the latest fault
        self._last_now: float | None = None  # the latest good tick time
        self._last_measured: np.ndarray | None = None  # the latest valid measured position since the last reset
        self._worker = threading.Thread(target=self._work, name="policy-inference", daemon=True)
        self._worker.start()

    # -- observations ---------------------------------------------------------------
    def push(self, feature: str, stamp_s: float, value: np.ndarray) -> None:
        with self._lock:
            fresh = self.buffers[feature].push(stamp_s, value)
            if fresh and feature == self.trace_stream:
                self._arrivals[feature] = (stamp_s, self.clock())
            if fresh and feature == self.trigger and self._armed_since is not None and not self._busy:
                observation, _ = self._observe(stamp_s)
                if observation is not None:  # else the tick holds for the stale stream
                    self._start_inference(observation, stamp_s)

    def observe(self, t: float) -> tuple[dict[str, np.ndarray] | None, list[str]]:
        """Every feature's value at t, or None and the names of missing/stale streams: what the model
        is given when inference starts at t."""
        with self._lock:
            return self._observe(t)

    def _observe(self, t: float) -> tuple[dict[str, np.ndarray] | None, list[str]]:
        observation: dict[str, np.ndarray] = {}
        bad: list[str] = []
        for name, buffer in self.buffers.items():
            sample = buffer.sample(t)
            if sample is None or sample.stale or (name == STATE_FEATURE and self._state_problem(sample.value)):
                bad.append(name)  # never infer from a broken state: the tick holds for it
            else:
                observation[name] = sample.value
        return (None if bad else observation), bad

    def stale_streams(self, t: float) -> list[str]:
        """The streams with no fresh value at t (what `observe` names), without assembling one."""
        return [name for name, buffer in self.buffers.items() if not buffer.fresh_at(t)]

    def measured_position(self) -> np.ndarray | None:
        latest = self.buffers[STATE_FEATURE].latest()
        return None if latest is None else latest[1]

    # -- control tick ---------------------------------------------------------------
    def lead_ticks(self) -> int:
        # the worst of the recent latencies (`_worst_recent_latency_s`): old spikes (start-up, a busy host)
        # age out; with a trigger, inference starts at its next message: up to a period after the tick
        return math.ceil(self._worst_recent_latency_s * self.fps) + 1 + (self.trigger is not None)

    def set_chunk_policy(self, name: ChunkPolicyName | str) -> None:
        policy = make_chunk_policy(name, self.fps, self.n_action_steps, self.replan_threshold)
        with self._lock:
            self.queue = policy

    def _commanded_velocity(self, now: float) -> np.ndarray | None:
        """Velocity of the last command at `now`, so acceleration stays bounded across chunks."""
        if self._last_command is None:
            return None
        t0, command = self._last_command
        k = int(round((now - t0) * self.fps))
        return command.velocity_at(k)

    def _out(self, now: float, kind: TickKind, command: SafeChunk | None, reason: str = "",
             prediction: np.ndarray | None = None, chunks_accepted: int = 0) -> TickOutput:
        self.history.append((self.ticks, now, kind))
        if command is not None and _is_finite_time(now):
            self._last_command = (now, command)
        return TickOutput(kind, command, reason, self.ticks, prediction, chunks_accepted)

    def take_trace(self, output: TickOutput) -> ChunkTrace | None:
        """The trace of the newest chunk if `output` is the first command that carries it (a CHUNK tick that
        read the queue after the chunk landed), else None; the caller adds the publish and the stamp."""
        if output.kind is not TickKind.CHUNK:
            return None
        with self._lock:
            if self._pending_trace is None or self._pending_trace[0] > output.chunks_accepted:
                return None
            trace = self._pending_trace[1]
            self._pending_trace = None
        return trace

    # -- faults -----------------------------------------------------------------------
    def _state_problem(self, value: object) -> tuple[RunnerFault, str] | None:
        """What makes a measured state unusable (or None): every hold and every safety check starts from it."""
        state = np.asarray(value)
        if state.shape != (self.n_joints,) or state.dtype.kind not in "fiu":
            return RunnerFault.STATE_SHAPE, (f"the measured joint state has shape {state.shape} of {state.dtype}, "
                                             f"not {self.n_joints} numbers")
        finite = np.isfinite(state)
        if not finite.all():
            return RunnerFault.STATE_NON_FINITE, (f"the measured joint state is not finite in joint(s) "
                                                  f"{np.flatnonzero(~finite).tolist()}")
        return None

    def record_fault(self, kind: RunnerFault, reason: str) -> None:
        """Count it and keep it for /diagnostics; log it only when the reason changed, so a fault that lasts
        (a model that keeps failing, a broken joint state) is one line, not one per tick. Public for the
        node's faults outside the runner (an input message it cannot decode)."""
        message = f"{kind}: {reason}"
        with self._fault_lock:
            self.faults[kind] += 1
            self.last_fault = message
            self._fault_at = time.monotonic()
            new = message != self._logged_fault
            if new:
                self._logged_fault = message
        if new:
            self.log(message)

    def _safe_position(self, now: float) -> np.ndarray | None:
        """The position a fault holds, safest first.

        - The e-stop's latched position while it is latched: a fault never moves an e-stopped arm.
        - The measured position, when the measurement itself is fine (a bad model output, clock, bug).
        - Otherwise the measurement cannot be trusted, nor a hold of it: the position the last command put
          the arm at for `now` (what the arm was tracking), so the hold is where the arm is and no jump.
        - Nothing commanded since the last reset: the last valid measurement since then.
        - None of those: None, nothing is sent (the driver keeps holding its own goal).
        """
        if self.gate.estop_latched and self.gate.hold_position is not None:
            return self.gate.hold_position
        latest = self.buffers[STATE_FEATURE].latest()
        if latest is not None and self._state_problem(latest[1]) is None:
            return np.asarray(latest[1], np.float64)
        if self._last_command is not None:
            t0, command = self._last_command
            t = now if _is_finite_time(now) else (t0 if self._last_now is None else self._last_now)
            k = min(max(int(round((t - t0) * self.fps)), 0), len(command.positions) - 1)
            return command.positions[k]
        return self._last_measured

    def fault_hold(self, now: float, kind: RunnerFault, reason: str) -> TickOutput:
        """Count and log the fault, drop the plan (a runner that just failed does not resume it) and hold the
        safest position known. Public for the node's last-resort guard around everything else in its tick."""
        self.record_fault(kind, reason)
        self._drop_plan()
        position = self._safe_position(now)
        command = None if position is None else self.limits.hold(position)
        return self._out(now, TickKind.FAULT, command, f"{kind}: {reason}")

    def _clock_problem(self, now: float) -> str | None:
        if not _is_finite_time(now):
            return f"the tick clock read {now!r}, not a finite time"
        if self._last_now is not None and now < self._last_now:
            # A stepped system clock or a restarted simulation: what was planned on the old time base is
            # dropped (and a chunk being inferred on it), and time goes on from here.
            self._last_now = now
            self.reset()
            return "the tick clock went backwards: the plan is dropped"
        return None

    def _drop_plan(self) -> None:
        """Forget the queued chunks and a pending trigger: a hold never resumes the plan it interrupted."""
        with self._lock:
            self.queue.clear()
            self._armed_since = None

    def _hold(self, now: float, kind: TickKind, measured: np.ndarray, reason: str) -> TickOutput:
        self._drop_plan()
        self.limits.interventions[_INTERVENTION[kind]] += 1
        return self._out(now, kind, self.limits.hold(measured), reason)

    def tick(self, now: float) -> TickOutput:
        self.ticks += 1
        try:
            return self._tick(now)
        except Exception as err:  # the last resort: whatever a tick meets, the arm holds
            return self.fault_hold(now, RunnerFault.INTERNAL, f"{type(err).__name__}: {err}")

    def _tick(self, now: float) -> TickOutput:
        clock_problem = self._clock_problem(now)
        if clock_problem is not None:
            return self.fault_hold(now, RunnerFault.CLOCK, clock_problem)
        self._last_now = now
        measured = self.measured_position()
        if measured is None:
            return self._out(now, TickKind.WAIT, None, "no joint state yet")
        state_problem = self._state_problem(measured)
        if state_problem is not None:
            return self.fault_hold(now, *state_problem)
        self._last_measured = measured
        gate = self.gate.state(now)
        if gate is GateState.ESTOP:
            return self._hold(now, TickKind.ESTOP, self.gate.latched_hold(measured), "e-stop latched")
        if gate is GateState.DEADMAN:
            return self._hold(now, TickKind.DEADMAN, measured, "deadman lapsed")
        bad = self.stale_streams(now)
        if bad:
            return self._hold(now, TickKind.STALE, measured, f"stale observation: {', '.join(bad)}")
        with self._lock:
            wants_chunk = self.queue.needs_inference(now, self.lead_ticks())
            due = self.queue.due(now)
            accepted = self._accepted
        if due is None:
            output = self._out(now, TickKind.HOLD, self.limits.hold(measured), "waiting for a chunk")
        else:
            try:
                command = self.limits.safe_chunk(due, measured, 1.0 / self.fps, self._commanded_velocity(now))
            except ValueError as err:  # a plan the worker's check should have refused: defence in depth
                return self.fault_hold(now, RunnerFault.MODEL_SHAPE, f"the safety layer refused the plan: {err}")
            output = self._out(now, TickKind.CHUNK, command, prediction=due, chunks_accepted=accepted)
            if self._logged_fault and time.monotonic() - self._fault_at > FAULT_LOG_QUIET_S:
                self._logged_fault = ""  # running well again: the same fault later is news
        # Last, and without waiting for the worker: woken earlier it would only wait for this thread's
        # GIL, and a tick that waited on the (normal-priority) worker would inherit its scheduling
        # delays and miss deadlines.
        if wants_chunk:
            self._want_inference(now)
        return output

    def reset(self) -> None:
        with self._lock:
            self.queue.clear()
            if self._request is not None:  # not taken by the worker yet: it never will be
                self._request = None
                self._busy = False
            self._armed_since = None
            self._pending_trace = None
            self._last_command = None
            self._last_measured = None  # from before a pause: the arm may have been moved since
            self._generation += 1
            self._logged_fault = ""  # an operator restarted it: a fault that returns is logged again

    # -- inference worker -------------------------------------------------------------
    def _want_inference(self, now: float) -> None:
        with self._wake:
            if self._busy:  # the inference under way answers this want
                return
            if self.trigger is not None and (self._armed_since is None or self._armed_since >= now):
                self._armed_since = now if self._armed_since is None else self._armed_since
                return  # the trigger's next message starts it
            # no trigger, or none came since the last tick
            observation, _ = self._observe(now)
            if observation is not None:  # else a message went stale since the tick checked: it holds next
                self._start_inference(observation, now)

    def _start_inference(self, observation: dict[str, np.ndarray], t_obs: float) -> None:
        """With the lock held and the worker idle."""
        capture, arrival = self._arrivals.get(self.trace_stream, (None, None))
        self._request = (observation, t_obs, self._generation, ChunkTrace(capture=capture, arrival=arrival),
                         self._guidance(t_obs))
        self._armed_since = None
        self._busy = True  # from now: a second request would only overwrite this one
        self._wake.notify()

    def _guidance(self, t_obs: float) -> Guidance | None:
        """Under rtc with a guidable policy: the plan from t_obs on, and the ticks the inference will take
        (the worst recent latency, as lead_ticks plans with)."""
        if self.predict_guided is None or not isinstance(self.queue, RealTimeChunking):
            return None
        actions = self.queue.prefix_at(t_obs)
        if actions is None:
            return None
        delay = min(len(actions), math.ceil(self._worst_recent_latency_s * self.fps))
        return actions, delay

    def _work(self) -> None:
        if self.worker_cpus and (problem := pin_current_thread(self.worker_cpus)):
            self.last_error = f"inference thread {problem}"  # it runs wherever the OS puts it
        while True:
            with self._wake:
                while self._request is None and not self._stop:
                    self._wake.wait()
                if self._stop or self._request is None:  # woken to stop
                    return
                observation, t_obs, generation, trace, guidance = self._request
                self._request = None
            try:
                self._infer(observation, t_obs, generation, trace, guidance)
            except Exception as err:  # after the model: accepting or publishing failed (a bug); it holds
                self.record_fault(RunnerFault.INTERNAL, f"inference worker: {type(err).__name__}: {err}")
            finally:
                with self._wake:
                    self._busy = False

    def _infer(self, observation: dict[str, np.ndarray], t_obs: float, generation: int, trace: ChunkTrace,
               guidance: Guidance | None = None) -> None:
        """One inference; its chunk is checked, then queued (or dropped and counted) before it counts as done."""
        trace.inference_start = self.clock()
        started = time.perf_counter()
        try:
            if guidance is not None and self.predict_guided is not None:
                output = self.predict_guided(observation, *guidance)
            else:
                output = self.predict(observation)
        except Exception as err:  # a failed inference holds, never crashes the loop
            self.last_error = f"{type(err).__name__}: {err}"
            self.record_fault(RunnerFault.MODEL_ERROR, self.last_error)
            return
        latency = time.perf_counter() - started
        try:
            chunk: np.ndarray | None = checked_chunk(output, self.n_joints)
        except ModelOutputError as err:
            chunk = None
            self.record_fault(err.kind, str(err))
        with self._lock:
            current = generation == self._generation  # else reset while inferring (enable, e-stop release)
            if current and chunk is None:
                self.queue.clear()  # a model that just produced garbage is not trusted with its older plan
            elif current and chunk is not None:
                self.queue.accept(chunk, t_obs, self.clock())
                self._accepted += 1
                trace.inference_end = self.clock()
                self._pending_trace = (self._accepted, trace)
        self.latencies_s.append(latency)
        self._recent_latencies_s.append(latency)
        self._worst_recent_latency_s = max(self._recent_latencies_s)
        self.inferences += 1
        if current and chunk is not None and self.on_chunk is not None:
            self.on_chunk()
        # The young generations, now that the chunk is out (microseconds). Left to Python, a collection starts
        # in whichever thread allocates past gen0's threshold, often between the forward and the publish, or
        # in a tick. Survivors move to the old generation as they would; Python's own policy still decides
        # its full collections.
        gc.collect(1)

    def close(self) -> None:
        with self._wake:
            self._stop = True
            self._wake.notify()
        self._worker.join(timeout=5.0)

    def latency_percentiles_ms(self) -> tuple[float, float]:
        if not self.latencies_s:
            return math.nan, math.nan
        values = np.array(self.latencies_s) * 1e3
        return float(np.percentile(values, 50)), float(np.percentile(values, 99))
