"""The simulated tasks (ROS-free): seeded layouts, the task text and the success check.

Every episode is drawn from its own seed, so an episode is reproducible from (task, seed) and
training seeds (the demo's 0..999) never meet evaluation seeds (1000 and up).

- reach: a red patch on the table; success = the tcp within `success_distance` of the point
  `target_height` above it at the end.
- pick_place: one cube (random colour, size, yaw) and a square zone; success = the cube resting
  inside the zone.
- pick_color: several cubes of different colours; the text names one ("pick up the blue
  cube"); success = that cube lifted.
- pick_taller: two blocks of one colour whose top faces look the same size from the head
  camera (the taller one has a proportionally smaller footprint); only depth tells which is
  taller; success = the taller block lifted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from koch_sim.layout import Layout, ObjectRole, SceneObject, yaw_quaternion
from koch_sim.sim_config import SimConfig, TaskKind, task_kind

COLOURS: dict[str, tuple[float, float, float, float]] = {
    "red": (0.85, 0.12, 0.1, 1.0),
    "green": (0.12, 0.62, 0.2, 1.0),
    "blue": (0.12, 0.28, 0.85, 1.0),
    "yellow": (0.95, 0.8, 0.08, 1.0),
    "purple": (0.55, 0.18, 0.7, 1.0),
}
ZONE_RGBA = (0.95, 0.95, 0.95, 1.0)
PATCH_HALF_HEIGHT = 0.0005
MAX_DRAWS = 1000


def _ring_points(rng: np.random.Generator, sim: SimConfig, count: int, clearance: float) -> list[np.ndarray]:
    """`count` points on the workspace ring, pairwise at least `clearance` apart."""
    w = sim.workspace
    for _ in range(MAX_DRAWS):
        radius = np.sqrt(rng.uniform(w.radius_min**2, w.radius_max**2, count))
        azimuth = rng.uniform(-w.azimuth_max, w.azimuth_max, count)
        points = [np.array([r * math.cos(a), r * math.sin(a)]) for r, a in zip(radius, azimuth)]
        if all(np.linalg.norm(a - b) >= clearance for i, a in enumerate(points) for b in points[i + 1 :]):
            return points
    raise RuntimeError(f"could not place {count} objects {clearance} m apart on the workspace ring; "
                       "widen sim.yaml workspace or lower min_separation")


def _block(name: str, xy: np.ndarray, half: tuple[float, float, float], rgba, yaw: float) -> SceneObject:
    return SceneObject(name, ObjectRole.BLOCK, half, rgba, (float(xy[0]), float(xy[1]), half[2]), yaw_quaternion(yaw),
                       mass=float(8 * half[0] * half[1] * half[2] * 500.0))  # light wood / plastic, 500 kg/m^3


def sample_layout(task: TaskKind | str, seed: int, sim: SimConfig) -> Layout:
    kind = task_kind(str(task))
    rng = np.random.default_rng([list(TaskKind).index(kind), seed])
    t = sim.tasks
    if kind is TaskKind.REACH:
        (xy,) = _ring_points(rng, sim, 1, 0.0)
        patch = SceneObject("target", ObjectRole.MARKER, (0.014, 0.014, PATCH_HALF_HEIGHT), COLOURS["red"],
                            (float(xy[0]), float(xy[1]), PATCH_HALF_HEIGHT))
        return Layout(kind.value, seed, "reach the red target", (patch,))
    yaws = rng.uniform(-math.pi / 4, math.pi / 4, 4)
    if kind is TaskKind.PICK_PLACE:
        clearance = max(sim.workspace.min_separation, t.pick_place.zone_half * 2 + 0.02)
        cube_xy, zone_xy = _ring_points(rng, sim, 2, clearance)
        size = float(rng.uniform(t.pick_place.cube_half[0], t.pick_place.cube_half[1]))
        colour = str(rng.choice([c for c in COLOURS if c != "yellow"]))
        zone_half = (t.pick_place.zone_half, t.pick_place.zone_half, PATCH_HALF_HEIGHT)
        zone = SceneObject("zone", ObjectRole.MARKER, zone_half, COLOURS["yellow"],
                           (float(zone_xy[0]), float(zone_xy[1]), PATCH_HALF_HEIGHT))
        cube = _block("cube", cube_xy, (size, size, size), COLOURS[colour], float(yaws[0]))
        return Layout(kind.value, seed, f"put the {colour} cube in the yellow square", (zone, cube))
    if kind is TaskKind.PICK_COLOR:
        n = t.pick_color.cubes
        colours = [str(c) for c in rng.choice(list(COLOURS), n, replace=False)]
        points = _ring_points(rng, sim, n, sim.workspace.min_separation)
        h = t.pick_color.cube_half
        cubes = tuple(_block(f"cube_{c}", xy, (h, h, h), COLOURS[c], float(y))
                      for c, xy, y in zip(colours, points, yaws))
        goal = colours[int(rng.integers(n))]
        return Layout(kind.value, seed, f"pick up the {goal} cube", cubes)
    cfg = t.pick_taller
    short = float(rng.uniform(cfg.short_height[0], cfg.short_height[1]))
    tall = float(rng.uniform(cfg.tall_height[0], cfg.tall_height[1]))
    camera_z = sim.camera.position[2]
    # equal apparent size from the head camera: half / (camera_z - top) is the same for both tops
    tall_half = cfg.top_half * (camera_z - tall) / (camera_z - short)
    colour = str(rng.choice(list(COLOURS)))
    points = _ring_points(rng, sim, 2, sim.workspace.min_separation)
    names = ["block_a", "block_b"]
    tall_index = int(rng.integers(2))
    blocks = []
    for i, (name, xy) in enumerate(zip(names, points)):
        block_half = (tall_half, tall_half, tall / 2) if i == tall_index else (cfg.top_half, cfg.top_half, short / 2)
        blocks.append(_block(name, xy, block_half, COLOURS[colour], float(yaws[i])))
    return Layout(kind.value, seed, "pick up the taller block", tuple(blocks))


def goal_object(layout: Layout) -> SceneObject:
    """The object the task is about: the target patch, the cube, the named cube, the taller block."""
    kind = task_kind(layout.task)
    if kind is TaskKind.REACH:
        return layout.find("target")
    if kind is TaskKind.PICK_PLACE:
        return layout.find("cube")
    if kind is TaskKind.PICK_COLOR:
        colour = next((c for c in COLOURS if f" {c} " in f" {layout.text} "), None)
        if colour is None:
            raise ValueError(f"task text {layout.text!r} names none of the colours {sorted(COLOURS)}")
        return layout.find(f"cube_{colour}")
    return max(layout.blocks, key=lambda o: o.half[2])


@dataclass(frozen=True)
class Outcome:
    success: bool
    measure: float   # the quantity judged: reach distance, distance to the zone, lift height (m)
    detail: str


def success_rule(task: TaskKind | str, sim: SimConfig) -> tuple[str, str]:
    """What `judge` checks, in words, and the name of the measure it reports (for reports and plots)."""
    kind = task_kind(str(task))
    if kind is TaskKind.REACH:
        return f"tcp within {sim.tasks.reach.success_distance * 100:g} cm of the target", "tcp distance"
    if kind is TaskKind.PICK_PLACE:
        return "the cube resting inside the zone", "cube-to-zone distance"
    if kind is TaskKind.PICK_COLOR:
        return "the named cube lifted", "lift"
    return "the taller block lifted", "lift"


def judge(layout: Layout, objects_now: tuple[SceneObject, ...], tcp: np.ndarray, sim: SimConfig) -> Outcome:
    """Did the episode succeed? `objects_now`: the layout's objects at their current poses."""
    kind = task_kind(layout.task)
    now = {o.name: o for o in objects_now}
    goal = now[goal_object(layout).name]
    position = np.asarray(goal.position)
    if kind is TaskKind.REACH:
        point = position + [0.0, 0.0, sim.tasks.reach.target_height - position[2]]
        distance = float(np.linalg.norm(np.asarray(tcp) - point))
        ok = distance <= sim.tasks.reach.success_distance
        return Outcome(ok, distance, f"tcp {distance * 100:.1f} cm from the target")
    if kind is TaskKind.PICK_PLACE:
        zone = layout.find("zone")
        offset = position[:2] - np.asarray(zone.position[:2])
        inside = bool(np.all(np.abs(offset) <= zone.half[0]))
        resting = position[2] <= goal.half[2] + 0.004
        return Outcome(inside and resting, float(np.linalg.norm(offset)),
                       f"cube {np.linalg.norm(offset) * 100:.1f} cm from the zone centre, "
                       f"{'inside' if inside else 'outside'}, {'resting' if resting else 'not resting'}")
    lift = float(position[2] - goal.half[2])
    needed = sim.tasks.pick_color.lift_height if kind is TaskKind.PICK_COLOR else sim.tasks.pick_taller.lift_height
    return Outcome(lift >= needed, lift, f"{goal.name} lifted {lift * 100:.1f} cm")


# The tcp is "down on" a block when it is over the block (within its half size plus this, in xy) and
# no higher than this above its top: where the expert's jaws close (koch_sim.expert.grasp_point).
DOWN_ON_MARGIN_M = 0.02


def block_down_on(layout: Layout, objects_now: tuple[SceneObject, ...], tcp: np.ndarray) -> str | None:
    """The block the jaws are down on now (the nearest, if two qualify), or None.

    On tasks with a distractor the first block a policy comes down on is the one it chose: a policy
    that picks the right block and fails to lift it differs from one that went for the wrong one.
    """
    names = {o.name for o in layout.blocks}
    tcp = np.asarray(tcp, dtype=np.float64)
    best: tuple[float, str] | None = None
    for obj in objects_now:
        if obj.name not in names:
            continue
        centre = np.asarray(obj.position)
        horizontal = float(np.linalg.norm(tcp[:2] - centre[:2]))
        over = horizontal <= max(obj.half[0], obj.half[1]) + DOWN_ON_MARGIN_M
        low = tcp[2] <= centre[2] + obj.half[2] + DOWN_ON_MARGIN_M
        if over and low and (best is None or horizontal < best[0]):
            best = (horizontal, obj.name)
    return None if best is None else best[1]
