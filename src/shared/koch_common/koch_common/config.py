"""Typed configuration: dataclasses loaded from the YAML files in `config/`.

One config story for every stage: a YAML file gives the defaults, `key.sub=value`
overrides come from the command line (or ROS parameters with the same names), and an
unknown key is an error that names the key and the file rather than being ignored.

Values are checked as they load: a float must be a finite number (YAML's `.nan` and `.inf`
would make every comparison of a safety limit false, switching it off without a word), an int
is not a boolean (`steps=true`), and a dataclass that checks its own ranges in `__post_init__`
(raising ConfigError) has its message prefixed with the file and key it came from.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration file or override is wrong; the message says what and how to fix it."""


def config_dir() -> Path:
    """The project's `config/` directory.

    `KOCH_CONFIG_DIR` wins; otherwise the source tree (symlink installs) or the installed
    share directory of koch_common.
    """
    env = os.environ.get("KOCH_CONFIG_DIR")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "config"
        if (candidate / "koch.yaml").is_file():
            return candidate
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        candidate = Path(prefix) / "share" / "koch_common" / "config"
        if (candidate / "koch.yaml").is_file():
            return candidate
    raise ConfigError(
        "cannot find the project's config/ directory; set KOCH_CONFIG_DIR to it "
        "or source the workspace's install/setup.bash"
    )


def resolve_config_path(path: str | os.PathLike[str]) -> Path:
    """A path as given, or relative to `config/` when it does not exist as given."""
    p = Path(path)
    if p.exists() or p.is_absolute():
        return p
    return config_dir() / p


def read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    p = resolve_config_path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    try:
        with open(p, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        problem = " ".join(str(error).split())  # the parser's message names the line and column
        raise ConfigError(f"{p} is not valid YAML (UTF-8): {problem}; fix the file") from error
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def parse_overrides(overrides: list[str] | None) -> dict[str, Any]:
    """Turn `["a.b=1", "c=[1, 2]"]` into a nested dict; values are parsed as YAML."""
    nested: dict[str, Any] = {}
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        key, raw = item.split("=", 1)
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(raw)
    return nested


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def from_dict(cls: type[T], data: Any, where: str = "") -> T:
    """Build dataclass `cls` from plain data, checking keys and nesting recursively."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where or cls.__name__}: unknown key(s) {unknown}; valid keys are {sorted(fields)}"
        )
    kwargs: dict[str, Any] = {}
    for name, field in fields.items():
        key_path = f"{where}.{name}" if where else name
        if name not in data:
            if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{key_path}: required key is missing")
            continue
        kwargs[name] = _convert(hints[name], data[name], key_path)
    try:
        return cls(**kwargs)
    except ConfigError as err:  # the dataclass's own range checks (__post_init__)
        raise ConfigError(f"{where or cls.__name__}: {err}") from None


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        return _convert(non_none[0], value, where) if len(non_none) == 1 else value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)] if args else value
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return {k: _convert(args[1], v, f"{where}.{k}") for k, v in value.items()} if args else value
    if tp is float:
        return _finite_float(value, where)
    if tp is int and isinstance(value, bool):
        raise ConfigError(f"{where}: expected int, got the boolean {value!r}; write a number")
    if tp in (int, str, bool) and not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def _finite_float(value: Any, where: str) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a number, got the boolean {value!r}")
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        # YAML 1.1 reads `1e-4` (no dot) as a string; accept it as the number it obviously is.
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    else:
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if not math.isfinite(number):
        raise ConfigError(f"{where}: {value!r} is not a finite number; write the value itself")
    return number


def require(condition: bool, message: str) -> None:
    """A range check of a config dataclass (in its `__post_init__`): ConfigError(message) unless `condition`.

    Written so that NaN fails it too (`not (x > 0)` rather than `x <= 0`)."""
    if not condition:
        raise ConfigError(message)


def load_config(cls: type[T], path: str | os.PathLike[str], overrides: list[str] | None = None) -> T:
    """Load `path` (absolute, relative, or relative to config/) into `cls`, applying overrides."""
    data = merge(read_yaml(path), parse_overrides(overrides))
    return from_dict(cls, data, where=str(resolve_config_path(path).name))
