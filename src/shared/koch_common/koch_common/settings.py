"""Node settings declared once: typed dataclass fields with their defaults and descriptions (ROS-free).

Every node's parameters are one dataclass in its package's core (`koch_policy.settings.PolicySettings`,
...), each field made by `setting(default, "description", ...)`. The node declares them as ROS
parameters with `koch_common.node_params.declare_settings` (descriptions, read-only flags, types and
ranges in their ParameterDescriptors: what `ros2 param describe` shows), and `koch_bringup.graph`
passes a node only the parameters that differ from these defaults (`node_parameters`). So a default
lives in one place, and the launch files, the nodes and their documentation cannot disagree.

The rule for defaults that live elsewhere: a setting whose value, when not given, comes from
another config file or artifact (koch.yaml's serial port, sim.yaml's emulator, the mapping's fps,
the checkpoint's n_action_steps) is `T | None = None`, and its description says where from
("unset: koch.yaml's <arm>.port"). Over ROS it is declared with its type and no value (`ros2
param get` says "not set"); giving it a value overrides the file. No setting uses a value of its
own type to mean "from the file". Values the consumer interprets by themselves (a camera width of
0 = the source's native resolution, exposure -1 = auto) are ordinary defaults, described as such.

Supported types: bool, int, float, str, a str-valued Enum (a string over ROS), list[bool | int |
float | str], and any of these `| None`. Booleans are not integers, and integers are not booleans;
an int is accepted for a float (30 for 30.0).
"""

from __future__ import annotations

import array
import dataclasses
import enum
import math
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import MISSING
from typing import Any, TypeVar

from koch_common.config import ConfigError

T = TypeVar("T")

REQUIRED: Any = MISSING  # setting(REQUIRED, "...") : no default, the node refuses to start without it

_DESCRIPTION = "description"
_READ_ONLY = "read_only"
_CHOICES = "choices"
_MINIMUM = "minimum"
_MAXIMUM = "maximum"

SCALAR_TYPES = (bool, int, float, str)


def setting(default: Any, description: str, *, read_only: bool = True,
            choices: Sequence[str] = (), minimum: float | None = None, maximum: float | None = None) -> Any:
    """A settings dataclass field: its default (REQUIRED: none), what it means, and its constraints.

    `read_only` (the default): read once at start-up, so ROS refuses to change it later; a node that
    applies a change at run time (in its on-set-parameters callback) declares it `read_only=False`.
    `choices`: the allowed strings; `minimum`/`maximum`: inclusive bounds of a number (an int or
    float field, or each element of a list).
    """
    metadata = {_DESCRIPTION: description, _READ_ONLY: read_only, _CHOICES: tuple(choices),
                _MINIMUM: minimum, _MAXIMUM: maximum}
    if isinstance(default, list):
        items = list(default)
        return dataclasses.field(default_factory=lambda: list(items), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class SettingInfo:
    """One field of a settings dataclass, resolved: what a ROS parameter declaration needs."""

    name: str
    scalar: type  # bool, int, float, str, or a str-valued Enum subclass (for a list: its element type)
    is_list: bool
    optional: bool  # `T | None`: unset means "from elsewhere", as the description says
    default: Any  # REQUIRED when there is none
    description: str
    read_only: bool
    choices: tuple[str, ...]
    minimum: float | None
    maximum: float | None

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    @property
    def element_name(self) -> str:
        """The scalar's name: an Enum is a string."""
        return "str" if self._is_enum else self.scalar.__name__

    @property
    def type_name(self) -> str:
        return f"list[{self.element_name}]" if self.is_list else self.element_name

    @property
    def _is_enum(self) -> bool:
        return isinstance(self.scalar, type) and issubclass(self.scalar, enum.Enum)

    @property
    def allowed(self) -> tuple[str, ...]:
        """The allowed strings: `choices`, or the values of an Enum field."""
        if self._is_enum:
            return tuple(str(member.value) for member in self.scalar)  # type: ignore[attr-defined]
        return self.choices

    def constraints(self) -> str:
        """The constraints in words (a ParameterDescriptor's additional_constraints)."""
        parts = []
        if self.required:
            parts.append("required")
        if self.allowed:
            parts.append("one of: " + ", ".join(self.allowed))
        if self.minimum is not None and self.maximum is not None:
            parts.append(f"from {self.minimum} to {self.maximum}")
        elif self.minimum is not None:
            parts.append(f"at least {self.minimum}")
        elif self.maximum is not None:
            parts.append(f"at most {self.maximum}")
        return "; ".join(parts)

    def check(self, value: Any, where: str = "") -> Any:
        """`value` converted to this field's type (an int to float, a string to its Enum), or a ConfigError."""
        label = where or f"parameter {self.name}"
        if value is None:
            if self.optional:
                return None
            raise ConfigError(f"{label}: a value is needed ({self.type_name}): {self.description}")
        if self.is_list:
            if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, array.array)):
                raise ConfigError(f"{label}={value!r}: expected a list of {self.element_name}")
            return [self._check_scalar(v, f"{label}[{i}]") for i, v in enumerate(value)]
        return self._check_scalar(value, label)

    def _check_scalar(self, value: Any, label: str) -> Any:
        kind = self.scalar
        if self._is_enum:
            if isinstance(value, kind):
                return value
            if not isinstance(value, str) or value not in self.allowed:
                raise ConfigError(f"{label}={value!r}: choose one of {list(self.allowed)}")
            return kind(value)
        if kind is bool:
            if not isinstance(value, bool):
                raise ConfigError(f"{label}={value!r}: expected true or false (a bool, not {type(value).__name__})")
        elif kind is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{label}={value!r}: expected an integer (not {type(value).__name__})")
        elif kind is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{label}={value!r}: expected a number (not {type(value).__name__})")
            value = float(value)
            if math.isnan(value):
                raise ConfigError(f"{label}: NaN is not a setting; give a number")
        elif not isinstance(value, str):
            raise ConfigError(f"{label}={value!r}: expected a string (not {type(value).__name__})")
        if self.choices and value not in self.choices:
            raise ConfigError(f"{label}={value!r}: choose one of {list(self.choices)}")
        if self.minimum is not None and value < self.minimum:
            raise ConfigError(f"{label}={value!r} is below its minimum {self.minimum}")
        if self.maximum is not None and value > self.maximum:
            raise ConfigError(f"{label}={value!r} is above its maximum {self.maximum}")
        return value

    def plain(self, value: Any) -> Any:
        """A checked value as ROS parameters carry it (an Enum as its string)."""
        if value is None or not self._is_enum:
            return list(value) if self.is_list and value is not None else value
        return [v.value for v in value] if self.is_list else value.value


def _resolve(name: str, hint: Any, owner: str) -> tuple[type, bool, bool]:
    """(scalar type, is a list, is optional) of a field's type hint, or TypeError."""
    optional = False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) != 1 or len(typing.get_args(hint)) != 2:
            raise TypeError(f"{owner}.{name}: only `T | None` unions are settings, not {hint}")
        hint, optional = args[0], True
    is_list = typing.get_origin(hint) is list
    if is_list:
        (hint,) = typing.get_args(hint) or (None,)
    is_enum = isinstance(hint, type) and issubclass(hint, enum.Enum)
    if is_enum and not all(isinstance(m.value, str) for m in hint):
        raise TypeError(f"{owner}.{name}: an Enum setting needs string values (a string over ROS)")
    if hint not in SCALAR_TYPES and not is_enum:
        raise TypeError(f"{owner}.{name}: type {hint} is not a setting type; use bool, int, float, str, a "
                        "str-valued Enum, list[...] of these, or one of them | None")
    return hint, is_list, optional


def settings_info(cls: type) -> tuple[SettingInfo, ...]:
    """Every field of settings dataclass `cls`, resolved and checked: a TypeError names what is wrong."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a settings dataclass")
    hints = typing.get_type_hints(cls)
    infos = []
    for f in dataclasses.fields(cls):
        where = f"{cls.__name__}.{f.name}"
        description = str(f.metadata.get(_DESCRIPTION, "")).strip()
        if not description:
            raise TypeError(f"{where} has no description: declare it with setting(default, 'what it means')")
        scalar, is_list, optional = _resolve(f.name, hints[f.name], cls.__name__)
        if f.default is not MISSING:
            default = f.default
        elif f.default_factory is not MISSING:
            default = f.default_factory()
        else:
            default = REQUIRED
        if optional and default is not None:
            raise TypeError(f"{where}: an optional setting's default is None (unset), not {default!r}")
        if optional and "unset" not in description:
            raise TypeError(f"{where}: say where an unset value comes from in the description ('unset: ...')")
        info = SettingInfo(f.name, scalar, is_list, optional, default, description,
                           bool(f.metadata.get(_READ_ONLY, True)), tuple(f.metadata.get(_CHOICES, ())),
                           f.metadata.get(_MINIMUM), f.metadata.get(_MAXIMUM))
        if info.choices and scalar is not str:
            raise TypeError(f"{where}: choices are for string settings")
        if (info.minimum is not None or info.maximum is not None) and scalar not in (int, float):
            raise TypeError(f"{where}: a minimum or maximum is for int or float settings")
        if default is not REQUIRED and default is not None:
            try:
                info.check(default)
            except ConfigError as err:
                raise TypeError(f"{where}: its default does not fit its own type: {err}") from None
        infos.append(info)
    return tuple(infos)


def setting_info(cls: type, name: str) -> SettingInfo:
    for info in settings_info(cls):
        if info.name == name:
            return info
    raise ConfigError(f"{cls.__name__} has no setting {name!r}; it has {sorted(i.name for i in settings_info(cls))}")


def default_of(cls: type, name: str) -> Any:
    """A setting's default as ROS carries it (e.g. for a launch argument's default); None when unset."""
    info = setting_info(cls, name)
    if info.required:
        raise ConfigError(f"{cls.__name__}.{name} is required: it has no default")
    return info.plain(info.default)


def build_settings(cls: type[T], values: Mapping[str, Any], defaults: T | None = None) -> T:
    """Settings `cls` from `values` (None or absent: the default, or `defaults`' value), checked and validated.

    A settings class may define `validate(self) -> Self` for checks across fields; it is called last.
    """
    infos = {i.name: i for i in settings_info(cls)}
    unknown = sorted(set(values) - set(infos))
    if unknown:
        raise ConfigError(f"{cls.__name__}: unknown setting(s) {unknown}; it has {sorted(infos)}")
    kwargs: dict[str, Any] = {}
    for name, info in infos.items():
        value = values.get(name)
        if value is None and defaults is not None:
            value = getattr(defaults, name)
        if value is None and info.required:
            raise ConfigError(f"parameter {name} is required ({info.type_name}): {info.description}")
        if value is not None or info.optional:
            kwargs[name] = info.check(value)
    settings = cls(**kwargs)
    validate = getattr(settings, "validate", None)
    return validate() if callable(validate) else settings


def node_parameters(cls: type, **values: Any) -> dict[str, Any]:
    """The ROS parameters to give a node whose settings are `cls`: only those that differ from the default.

    Each value is checked against its field (name, type, choices, bounds); None means "not given".
    """
    infos = {i.name: i for i in settings_info(cls)}
    unknown = sorted(set(values) - set(infos))
    if unknown:
        raise ConfigError(f"{cls.__name__}: unknown parameter(s) {unknown}; it has {sorted(infos)}")
    parameters = {}
    for name, value in values.items():
        if value is None:
            continue
        info = infos[name]
        checked = info.check(value, f"{cls.__name__}.{name}")
        if info.required or info.default is None or checked != info.check(info.default):
            parameters[name] = info.plain(checked)
    return parameters
