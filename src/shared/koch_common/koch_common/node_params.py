"""A settings dataclass as the ROS parameters of a node, with ParameterDescriptors (imports rclpy).

`declare_settings(node, PolicySettings)` declares one parameter per field, each with its
description, read-only flag, type (from the field's type hint) and, where the field has both
bounds, its integer or floating-point range, so `ros2 param describe` and `ros2 param list`
document the node; it returns the settings filled from the parameters, checked and validated.
`updated_settings` applies a run-time change to the fields a node declared changeable.

Only node modules import this module: the ROS-free cores (and `koch_common.settings`, where the
fields are declared) must stay importable without rclpy, as with `koch_common.node_runner`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.node import Node
from rclpy.parameter import Parameter

from koch_common.config import ConfigError
from koch_common.settings import REQUIRED, SettingInfo, build_settings, settings_info

T = TypeVar("T")

_SCALAR_TYPES = {bool: Parameter.Type.BOOL, int: Parameter.Type.INTEGER, float: Parameter.Type.DOUBLE,
                 str: Parameter.Type.STRING}
_ARRAY_TYPES = {bool: Parameter.Type.BOOL_ARRAY, int: Parameter.Type.INTEGER_ARRAY,
                float: Parameter.Type.DOUBLE_ARRAY, str: Parameter.Type.STRING_ARRAY}
_HOW_TO_WRITE = {
    Parameter.Type.BOOL: "true or false",
    Parameter.Type.INTEGER: "a whole number, e.g. 3",
    Parameter.Type.DOUBLE: "a number with a decimal point, e.g. 30.0 (30 is an integer to ROS)",
    Parameter.Type.STRING: "a string (quote it if it looks like a number or a bool)",
    Parameter.Type.BOOL_ARRAY: "a list of true/false",
    Parameter.Type.INTEGER_ARRAY: "a list of whole numbers",
    Parameter.Type.DOUBLE_ARRAY: "a list of numbers with decimal points, e.g. [1.0, 2.5]",
    Parameter.Type.STRING_ARRAY: "a list of strings, e.g. ['a', 'b']",
}


def parameter_type(info: SettingInfo) -> Parameter.Type:
    """The ROS parameter type of a setting: an Enum is a string; bool is BOOL, never INTEGER."""
    scalar = info.scalar if info.scalar in _SCALAR_TYPES else str
    return (_ARRAY_TYPES if info.is_list else _SCALAR_TYPES)[scalar]


def descriptor(info: SettingInfo) -> ParameterDescriptor:
    """What `ros2 param describe` shows for a setting."""
    described = ParameterDescriptor(name=info.name, type=parameter_type(info).value, description=info.description,
                                    additional_constraints=info.constraints(), read_only=info.read_only)
    if not info.is_list and info.minimum is not None and info.maximum is not None:
        if info.scalar is int:
            described.integer_range = [IntegerRange(from_value=int(info.minimum), to_value=int(info.maximum), step=0)]
        elif info.scalar is float:
            described.floating_point_range = [FloatingPointRange(from_value=float(info.minimum),
                                                                 to_value=float(info.maximum), step=0.0)]
    return described


def declare_settings(node: Node, cls: type[T], defaults: T | None = None) -> T:
    """Declare every field of settings dataclass `cls` as a parameter of `node`; the filled settings.

    `defaults` (an instance of `cls`, e.g. read from a config file) replaces the fields' own defaults.
    A required setting, or an optional one left unset, is declared with its type and no value.
    A wrong type, an out-of-range value or a missing required parameter is a ConfigError naming it.
    """
    values: dict[str, Any] = {}
    for info in settings_info(cls):
        default = getattr(defaults, info.name) if defaults is not None else info.default
        kind = parameter_type(info)
        if default is not REQUIRED and default is not None:
            default = info.plain(info.check(default))
            if info.is_list and not default:
                raise TypeError(f"{cls.__name__}.{info.name}: rclpy cannot declare an empty list with its type; "
                                "make the setting REQUIRED or `| None`")
        initial: Any = kind if default is REQUIRED or default is None else default
        try:
            parameter = node.declare_parameter(info.name, initial, descriptor(info))
        except InvalidParameterTypeException as err:
            reason = str(err).removesuffix(f": {info.name}")  # rclpy's, with the value given and its type
            raise ConfigError(f"parameter {info.name} must be {_HOW_TO_WRITE[kind]}: {reason}") from None
        except InvalidParameterValueException as err:
            reason = str(err).removesuffix(f": {info.name}")
            raise ConfigError(f"parameter {info.name} must be {info.constraints()}: {reason}") from None
        values[info.name] = None if parameter.type_ == Parameter.Type.NOT_SET else parameter.value
    return build_settings(cls, values)


def updated_settings(settings: T, parameters: Iterable[Parameter]) -> T:
    """`settings` with the parameters among its fields changed, checked and validated (for a node's
    on-set-parameters callback; ROS itself refuses read-only ones). A ConfigError says why not."""
    infos = {i.name: i for i in settings_info(type(settings))}
    values = {name: getattr(settings, name) for name in infos}
    for parameter in parameters:
        if parameter.name in infos:
            values[parameter.name] = infos[parameter.name].check(parameter.value)
    return build_settings(type(settings), values)
