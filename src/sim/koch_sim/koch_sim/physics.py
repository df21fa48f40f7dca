"""The simulated Koch's physics: MuJoCo stepped in real time behind the servo emulator (ROS-free).

`KochPhysics` owns the MuJoCo model of the arm and one episode's objects (koch_sim.mjcf) and
steps it at the model's fixed timestep against the monotonic clock in a thread of its own.
It never slows down silently: when stepping falls more than `max_lag_s` behind the wall clock
(an overloaded host), the missing time is skipped, counted, and shows in the real-time factor.

`ServoBridge` is what the Dynamixel emulator's servos read and write instead of their
first-order lag: Torque_Enable switches the joint's actuator on or off, Goal_Position (raw
ticks, koch.yaml's calibration) is the actuator's set point, and a servo in current-based
position mode caps the actuator's torque at Goal_Current (clamped by Current_Limit) through
the model's torque constant, so a closing gripper stops at what it grasps and squeezes with
no more than that current. Present_Position/Velocity/Current come back from the simulation.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import mujoco
import numpy as np

from koch_common.dynamixel_models import model_by_name
from koch_common.robot import RAD_PER_TICK, ArmConfig, KochConfig
from koch_sim.layout import Layout, ObjectRole, SceneObject
from koch_sim.mjcf import object_joint, scene_xml
from koch_sim.sim_config import ServoPhysics, SimConfig

IDLE_SLEEP_S = 0.002
RTF_WINDOW_S = 1.0


@dataclass(frozen=True)
class WorldState:
    """A consistent snapshot: simulation time, arm joint positions (rad) and every block's pose."""

    sim_time: float
    joints: np.ndarray
    velocities: np.ndarray
    poses: dict[str, tuple[np.ndarray, np.ndarray]]  # block name -> (position, quaternion w x y z)


@dataclass(frozen=True)
class Timing:
    """How the stepping keeps up with the wall clock."""

    real_time_factor: float  # simulated seconds per wall second over the last window
    skipped_s: float         # simulated time dropped because stepping fell behind, since start
    steps: int


class KochPhysics:
    def __init__(self, koch: KochConfig, sim: SimConfig, layout: Layout,
                 arm_positions: np.ndarray | None = None) -> None:
        self.koch = koch
        self.sim = sim
        self.servos: list[ServoPhysics] = [sim.physics.servo(j.model) for j in koch.follower.joints]
        self._lock = threading.RLock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._skipped_s = 0.0
        self._steps = 0
        self._window: tuple[float, float] = (time.monotonic(), 0.0)
        self._rtf = 1.0
        n = len(koch.follower.joints)
        self._torque_on = np.zeros(n, dtype=bool)
        self._goal = np.array(koch.home if arm_positions is None else arm_positions, dtype=np.float64)
        self._force_cap = np.array([s.stall_torque_nm for s in self.servos])
        self.model, self.data = self._compile(layout)
        self.data.qpos[: len(self.servos)] = self._goal
        self._install(self.model, self.data, layout)

    # -- model ---------------------------------------------------------------------------------
    def _compile(self, layout: Layout) -> tuple[mujoco.MjModel, mujoco.MjData]:
        model = mujoco.MjModel.from_xml_string(scene_xml(self.koch, self.sim, layout.objects))
        return model, mujoco.MjData(model)

    def load(self, layout: Layout) -> None:
        """Rebuild the scene with `layout`'s objects; the arm keeps its state and the clock runs on."""
        model, data = self._compile(layout)
        n = len(self.servos)
        with self._lock:
            data.qpos[:n] = self.data.qpos[:n]
            data.qvel[:n] = self.data.qvel[:n]
            data.time = self.data.time  # the stepping thread paces by it
            self._install(model, data, layout)

    def _install(self, model: mujoco.MjModel, data: mujoco.MjData, layout: Layout) -> None:
        """Make `model`/`data` the simulated scene, with the servos' current commands applied."""
        n = len(self.servos)
        with self._lock:
            self._gain = model.actuator_gainprm[:n, 0].copy()
            self._bias = model.actuator_biasprm[:n, :3].copy()
            self.model, self.data, self.layout = model, data, layout
            self._apply_servos()
            mujoco.mj_forward(model, data)

    def _apply_servos(self) -> None:
        n = len(self.servos)
        on = self._torque_on.astype(np.float64)
        self.model.actuator_gainprm[:n, 0] = self._gain * on
        self.model.actuator_biasprm[:n, :3] = self._bias * on[:, None]
        self.model.actuator_forcerange[:n, 0] = -self._force_cap
        self.model.actuator_forcerange[:n, 1] = self._force_cap
        self.data.ctrl[:n] = self._goal

    # -- servos ----------------------------------------------------------------------------------
    def drive(self, joint: int, torque_on: bool, goal_rad: float, current_cap_a: float | None) -> None:
        """One servo's command: torque on/off, position set point (rad), optional current cap (A)."""
        servo = self.servos[joint]
        cap = servo.stall_torque_nm
        if current_cap_a is not None:
            cap = min(cap, servo.torque_constant * abs(current_cap_a))
        with self._lock:
            self._torque_on[joint] = torque_on
            self._goal[joint] = goal_rad
            self._force_cap[joint] = cap
            self._apply_servos()

    def joint_state(self, joint: int) -> tuple[float, float, float]:
        """Position (rad), velocity (rad/s) and actuator torque (N m) of one joint now."""
        with self._lock:
            return float(self.data.qpos[joint]), float(self.data.qvel[joint]), float(self.data.actuator_force[joint])

    # -- time --------------------------------------------------------------------------------------
    def step(self, seconds: float) -> None:
        """Advance the simulation by `seconds` (whole timesteps), whatever the wall clock says."""
        with self._lock:
            steps = max(0, round(seconds / self.model.opt.timestep))
            if steps:
                mujoco.mj_step(self.model, self.data, nstep=steps)
                self._steps += steps

    def start(self) -> KochPhysics:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="mujoco-physics", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None

    def _run(self) -> None:
        wall0 = time.monotonic()
        with self._lock:
            sim0 = self.data.time
        max_lag = self.sim.physics.max_lag_s
        while not self._stop.is_set():
            now = time.monotonic()
            with self._lock:
                dt = self.model.opt.timestep
                behind = (sim0 + (now - wall0)) - self.data.time
                if behind > max_lag:  # fell behind: drop the excess instead of running fast to catch up
                    self._skipped_s += behind - max_lag
                    sim0 -= behind - max_lag
                    behind = max_lag
                steps = int(behind / dt)
                if steps > 0:
                    mujoco.mj_step(self.model, self.data, nstep=steps)
                    self._steps += steps
                self._update_rtf(now)
            time.sleep(IDLE_SLEEP_S)

    def _update_rtf(self, now: float) -> None:
        start, sim_start = self._window
        if now - start >= RTF_WINDOW_S:
            self._rtf = (self._sim_elapsed() - sim_start) / (now - start)
            self._window = (now, self._sim_elapsed())

    def _sim_elapsed(self) -> float:
        return self._steps * self.model.opt.timestep

    def timing(self) -> Timing:
        with self._lock:
            return Timing(self._rtf, self._skipped_s, self._steps)

    # -- world -----------------------------------------------------------------------------------
    def state(self) -> WorldState:
        n = len(self.servos)
        with self._lock:
            poses = {}
            for obj in self.layout.objects:
                if obj.role is ObjectRole.BLOCK:
                    address = self.model.jnt_qposadr[self.model.joint(object_joint(obj.name)).id]
                    qpos = self.data.qpos[address : address + 7]
                    poses[obj.name] = (qpos[:3].copy(), qpos[3:].copy())
            return WorldState(float(self.data.time), self.data.qpos[:n].copy(), self.data.qvel[:n].copy(), poses)

    def objects_now(self, state: WorldState | None = None) -> tuple[SceneObject, ...]:
        """The layout's objects at their poses in `state` (default: now); markers never move."""
        poses = (state or self.state()).poses
        return tuple(o.moved(*poses[o.name]) if o.name in poses else o for o in self.layout.objects)

    def tcp(self) -> np.ndarray:
        with self._lock:
            return self.data.site("tcp").xpos.copy()


class ServoBridge:
    """The emulator's view of the physics: servo IDs and raw register units <-> joints in SI units."""

    def __init__(self, physics: KochPhysics, arm: ArmConfig) -> None:
        self.physics = physics
        self.index = {j.id: i for i, j in enumerate(arm.joints)}
        self.joints = {j.id: j for j in arm.joints}
        self.has_current = {j.id: model_by_name(j.model).has_current_control for j in arm.joints}

    def drive(self, servo_id: int, torque_on: bool, goal_raw: int, current_cap_ma: int | None) -> None:
        joint = self.joints[servo_id]
        goal = joint.sign * (goal_raw - joint.zero_raw) * RAD_PER_TICK
        cap = None if current_cap_ma is None else current_cap_ma / 1000.0
        self.physics.drive(self.index[servo_id], torque_on, goal, cap)

    def present(self, servo_id: int) -> tuple[float, float, int]:
        """Present position (ticks, float), velocity (ticks/s) and Present_Current (XL330: mA) or
        Present_Load (XL430: 0.1 % of stall torque) for this servo."""
        joint = self.joints[servo_id]
        index = self.index[servo_id]
        position, velocity, torque = self.physics.joint_state(index)
        servo = self.physics.servos[index]
        if self.has_current[servo_id]:
            current = joint.sign * torque / servo.torque_constant * 1000.0
        else:
            current = joint.sign * torque / servo.stall_torque_nm * 1000.0
        ticks = joint.zero_raw + joint.sign * position / RAD_PER_TICK
        return ticks, joint.sign * velocity / RAD_PER_TICK, int(round(current))
