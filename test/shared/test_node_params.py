"""Settings dataclasses as ROS parameters: types, descriptors, defaults, and what is refused.

The ROS half runs on real rclpy nodes (declare, describe, set), without spinning: parameter
declaration and descriptors are the node's own, no DDS traffic is needed to check them.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import rclpy
from rcl_interfaces.msg import ParameterType
from rclpy.context import Context
from rclpy.node import Node
from rclpy.parameter import Parameter

from koch_camera.settings import CameraFile, CameraSettings, load_camera
from koch_common.config import ConfigError
from koch_common.cpu_budget import CpuRole
from koch_common.node_params import declare_settings, updated_settings
from koch_common.realtime import REALTIME_PRIORITY, RealtimeSettings
from koch_common.settings import REQUIRED, build_settings, default_of, node_parameters, setting, settings_info
from koch_driver.settings import DriverSettings, TeleopSettings
from koch_policy.chunk_policies import ChunkPolicyName
from koch_policy.settings import PolicySettings
from koch_record.settings import RecorderSettings
from koch_sim.settings import ScriptedLeaderSettings, SimWorldSettings

pytestmark = pytest.mark.dds

NODE_SETTINGS = [PolicySettings, DriverSettings, TeleopSettings, CameraFile, CameraSettings, RecorderSettings,
                 SimWorldSettings, ScriptedLeaderSettings]


class Mode(str, enum.Enum):
    FAST = "fast"
    SAFE = "safe"


@dataclass(frozen=True, kw_only=True)
class Sample:
    name: str = setting(REQUIRED, "a required string")
    flag: bool = setting(True, "a bool")
    count: int = setting(3, "an int with both bounds", minimum=1, maximum=10)
    gain: float = setting(0.5, "a float with a lower bound only", minimum=0.0)
    mode: Mode = setting(Mode.SAFE, "an enum, a string over ROS")
    kind: str = setting("a", "a string with choices", choices=("a", "b"), read_only=False)
    topics: list[str] = setting(["/x"], "a list of strings")
    weights: list[float] = setting([1.0, 2.0], "a list of floats")
    ids: list[int] = setting([1], "a list of ints")
    masks: list[bool] = setting([True], "a list of bools")
    port: str | None = setting(None, "an optional string; unset: from a config file")
    rate: float | None = setting(None, "an optional float; unset: from a config file")

    def validate(self) -> Sample:
        if self.name == "invalid":
            raise ConfigError("name=invalid is refused by validate()")
        return self


@pytest.fixture
def context() -> Iterator[Context]:
    context = Context()
    rclpy.init(context=context)
    yield context
    rclpy.try_shutdown(context=context)


def _node(context: Context, **overrides: object) -> Node:
    return Node("settings_test", context=context,
                parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()])


def _declare(context: Context, cls: type, **overrides: object):
    node = _node(context, **overrides)
    try:
        return declare_settings(node, cls), node
    except Exception:
        node.destroy_node()
        raise


# ---- ROS-free: the settings themselves ---------------------------------------------------------------

@pytest.mark.parametrize("cls", NODE_SETTINGS, ids=lambda c: c.__name__)
def test_every_node_setting_is_described_and_its_default_fits(cls: type) -> None:
    for info in settings_info(cls):  # raises on a missing description or a default of the wrong type
        assert len(info.description) > 15, f"{cls.__name__}.{info.name}: describe what it means"


def test_the_realtime_parameter_node_runner_reads_is_the_settings_field() -> None:
    assert [f.name for f in dataclasses.fields(RealtimeSettings)] == [REALTIME_PRIORITY, "cpus"]
    # The driver's loop under SCHED_FIFO by default; the policy node's callbacks only when asked (their FIFO
    # executor loop starves inference on few cores); the simulated servos stand in for hardware.
    assert DriverSettings().realtime_priority > 0
    assert PolicySettings(checkpoint="x").realtime_priority == SimWorldSettings().realtime_priority == 0
    assert {DriverSettings.CPU_ROLE, SimWorldSettings.CPU_ROLE, PolicySettings.CPU_ROLE} == {
        CpuRole.CONTROL, CpuRole.INFERENCE}


def test_a_setting_without_a_description_is_refused() -> None:
    @dataclass
    class Undescribed:
        rate: float = 1.0

    @dataclass
    class Blank:
        rate: float = setting(1.0, "  ")

    for cls in (Undescribed, Blank):
        with pytest.raises(TypeError, match="has no description"):
            settings_info(cls)


def test_settings_that_break_the_rules_are_refused() -> None:
    @dataclass
    class BoolForInt:
        count: int = setting(True, "a bool is not an integer")

    @dataclass
    class IntForBool:
        flag: bool = setting(1, "an integer is not a bool")

    @dataclass
    class SilentOptional:
        port: str | None = setting(None, "does not say where the value comes from")

    @dataclass
    class OptionalWithValue:
        port: str | None = setting("/dev/ttyACM0", "unset: koch.yaml's port")

    @dataclass
    class Mapping:
        table: dict[str, int] = dataclasses.field(default_factory=dict, metadata={"description": "not a ROS type"})

    @dataclass
    class ChoicesOnInt:
        count: int = setting(1, "choices are for strings", choices=("1", "2"))

    with pytest.raises(TypeError, match="does not fit its own type.*true or false"):
        settings_info(IntForBool)
    with pytest.raises(TypeError, match="does not fit its own type.*expected an integer"):
        settings_info(BoolForInt)
    with pytest.raises(TypeError, match="unset"):
        settings_info(SilentOptional)
    with pytest.raises(TypeError, match="default is None"):
        settings_info(OptionalWithValue)
    with pytest.raises(TypeError, match="not a setting type"):
        settings_info(Mapping)
    with pytest.raises(TypeError, match="choices are for string settings"):
        settings_info(ChoicesOnInt)


def test_values_are_checked_against_their_type_and_bools_are_not_integers() -> None:
    infos = {i.name: i for i in settings_info(Sample)}
    assert infos["gain"].check(2) == 2.0 and isinstance(infos["gain"].check(2), float)  # an int is a number
    for name, value in [("count", True), ("gain", False), ("flag", 1), ("flag", "true"), ("count", 2.0),
                        ("name", 3), ("topics", "/x"), ("topics", [1]), ("ids", [True]), ("masks", [0])]:
        with pytest.raises(ConfigError, match=name):
            infos[name].check(value)
    with pytest.raises(ConfigError, match="below its minimum"):
        infos["count"].check(0)
    with pytest.raises(ConfigError, match="above its maximum"):
        infos["count"].check(11)
    with pytest.raises(ConfigError, match=r"choose one of \['a', 'b'\]"):
        infos["kind"].check("c")
    assert infos["mode"].check("fast") is Mode.FAST
    with pytest.raises(ConfigError, match=r"choose one of \['fast', 'safe'\]"):
        infos["mode"].check("slow")


def test_build_settings_fills_defaults_and_refuses_missing_unknown_and_invalid() -> None:
    sample = build_settings(Sample, {"name": "x"})
    assert (sample.flag, sample.count, sample.mode, sample.port, sample.topics) == (True, 3, Mode.SAFE, None, ["/x"])
    with pytest.raises(ConfigError, match="parameter name is required"):
        build_settings(Sample, {})
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) \['nmae'\]"):
        build_settings(Sample, {"name": "x", "nmae": "y"})
    with pytest.raises(ConfigError, match="refused by validate"):
        build_settings(Sample, {"name": "invalid"})


def test_node_parameters_pass_only_what_differs_from_the_default() -> None:
    assert node_parameters(Sample, name="x", flag=True, count=3, gain=0.5, port=None) == {"name": "x"}
    assert node_parameters(Sample, name="x", count=4, gain=1, mode=Mode.FAST, port="/dev/a") == {
        "name": "x", "count": 4, "gain": 1.0, "mode": "fast", "port": "/dev/a"}
    assert node_parameters(Sample, mode="fast") == {"mode": "fast"}
    with pytest.raises(ConfigError, match=r"unknown parameter\(s\) \['cuont'\]"):
        node_parameters(Sample, cuont=4)
    with pytest.raises(ConfigError, match="Sample.count=True: expected an integer"):
        node_parameters(Sample, count=True)
    assert node_parameters(PolicySettings, checkpoint="/c", chunk_policy=default_of(PolicySettings, "chunk_policy"),
                           enabled=False, realtime_priority=0) == {"checkpoint": "/c"}
    assert node_parameters(DriverSettings, arm="follower") == {}
    with pytest.raises(ConfigError, match="choose one of"):
        node_parameters(PolicySettings, chunk_policy="bogus")


def test_the_chunk_policy_parameter_offers_what_chunk_policies_offers() -> None:
    info = {i.name: i for i in settings_info(PolicySettings)}["chunk_policy"]
    assert info.allowed == tuple(name.value for name in ChunkPolicyName) and not info.read_only
    assert info.default is ChunkPolicyName.EXECUTE_K and default_of(PolicySettings, "chunk_policy") == "execute_k"


# ---- ROS: declared parameters and their descriptors --------------------------------------------------

def test_field_types_map_to_parameter_types_with_descriptors(context: Context) -> None:
    sample, node = _declare(context, Sample, name="x")
    try:
        expected = {"name": ParameterType.PARAMETER_STRING, "flag": ParameterType.PARAMETER_BOOL,
                    "count": ParameterType.PARAMETER_INTEGER, "gain": ParameterType.PARAMETER_DOUBLE,
                    "mode": ParameterType.PARAMETER_STRING, "kind": ParameterType.PARAMETER_STRING,
                    "topics": ParameterType.PARAMETER_STRING_ARRAY, "weights": ParameterType.PARAMETER_DOUBLE_ARRAY,
                    "ids": ParameterType.PARAMETER_INTEGER_ARRAY, "masks": ParameterType.PARAMETER_BOOL_ARRAY,
                    "port": ParameterType.PARAMETER_STRING, "rate": ParameterType.PARAMETER_DOUBLE}
        infos = {i.name: i for i in settings_info(Sample)}
        for name, kind in expected.items():
            described = node.describe_parameter(name)
            assert described.type == kind, name
            assert described.description == infos[name].description
            assert described.read_only == (name != "kind")
        count = node.describe_parameter("count")
        assert (count.integer_range[0].from_value, count.integer_range[0].to_value) == (1, 10)
        assert "from 1 to 10" in count.additional_constraints
        gain = node.describe_parameter("gain")
        assert not gain.floating_point_range and gain.additional_constraints == "at least 0.0"  # one bound: words
        assert node.describe_parameter("mode").additional_constraints == "one of: fast, safe"
        assert node.describe_parameter("name").additional_constraints == "required"
        assert sample == Sample(name="x")
        assert isinstance(sample.weights, list) and isinstance(sample.mode, Mode)
        # Optional and unset: declared with its type and no value ("not set"), None in the settings.
        assert not node.has_parameter("missing") and node.has_parameter("port") and sample.port is None
        assert node.get_parameter_or("port").type_ == Parameter.Type.NOT_SET
    finally:
        node.destroy_node()


def test_overrides_fill_the_settings(context: Context) -> None:
    sample, node = _declare(context, Sample, name="y", flag=False, count=10, gain=2.5, mode="fast", kind="b",
                            topics=["/a", "/b"], weights=[0.5], ids=[4, 5], masks=[False], port="/dev/p", rate=50.0)
    node.destroy_node()
    assert sample == Sample(name="y", flag=False, count=10, gain=2.5, mode=Mode.FAST, kind="b", topics=["/a", "/b"],
                            weights=[0.5], ids=[4, 5], masks=[False], port="/dev/p", rate=50.0)


@pytest.mark.parametrize(("override", "match"), [
    ({"count": True}, "count must be a whole number"),  # a bool is not an integer, over ROS either
    ({"flag": 1}, "flag must be true or false"),
    ({"gain": 2}, r"gain must be a number with a decimal point, e\.g\. 30\.0"),
    ({"rate": 50}, "rate must be a number with a decimal point"),  # optional: typed all the same
    ({"count": 11}, r"count must be from 1 to 10: .*out of range"),  # the descriptor's range, at declaration
    ({"gain": -1.0}, "below its minimum 0.0"),  # one bound: checked by the settings
    ({"mode": "slow"}, "choose one of"),
    ({"kind": "c"}, "choose one of"),
    ({"name": "invalid"}, "refused by validate"),
])
def test_bad_parameters_are_refused_at_start_up_with_the_reason(context: Context, override: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        _declare(context, Sample, **{"name": "x", **override})


def test_a_missing_required_parameter_names_it_and_what_it_is(context: Context) -> None:
    with pytest.raises(ConfigError, match="parameter name is required .*a required string"):
        _declare(context, Sample)


def test_read_only_parameters_cannot_change_and_changeable_ones_are_checked(context: Context) -> None:
    sample, node = _declare(context, Sample, name="x")
    try:
        result = node.set_parameters([Parameter("count", value=5)])[0]
        assert not result.successful and "read-only" in result.reason
        assert node.set_parameters([Parameter("kind", value="b")])[0].successful  # read_only=False
        assert updated_settings(sample, [Parameter("kind", value="b"), Parameter("use_sim_time", value=True)]) == \
            dataclasses.replace(sample, kind="b")
        with pytest.raises(ConfigError, match="choose one of"):
            updated_settings(sample, [Parameter("kind", value="z")])
    finally:
        node.destroy_node()


def test_camera_settings_from_a_cameras_file_become_the_parameter_defaults(context: Context) -> None:
    node = _node(context, config="cameras/sim.yaml", camera="wrist", fps=15.0)
    try:
        where = declare_settings(node, CameraFile)
        settings = declare_settings(node, CameraSettings, defaults=load_camera(where.config, where.camera))
        assert (settings.mount, settings.depth, settings.fps) == ("wrist", True, 15.0)  # file, file, parameter
        assert node.get_parameter("mount").value == "wrist"
        assert node.describe_parameter("jpeg_quality").integer_range[0].to_value == 100
    finally:
        node.destroy_node()
