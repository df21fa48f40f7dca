"""The typed config loader every stage uses: what a user writes in YAML or on the command line."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from koch_common.config import ConfigError, load_config


@dataclass
class Optim:
    lr: float = 1.0e-3
    steps: int = 10


@dataclass
class Run:
    name: str = "run"
    optim: Optim = field(default_factory=Optim)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def test_exponent_without_a_dot_is_a_float_not_a_string(tmp_path: Path) -> None:
    # PyYAML (YAML 1.1) reads 1e-4 as the string "1e-4"; users write it that way all the time.
    config = load_config(Run, _write(tmp_path, "optim:\n  lr: 1e-4\n"), ["optim.steps=20"])
    assert config.optim.lr == pytest.approx(1e-4) and isinstance(config.optim.lr, float)
    assert config.optim.steps == 20


def test_overrides_win_and_bad_values_name_the_key(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: a\n")
    assert load_config(Run, path, ["optim.lr=3e-4"]).optim.lr == pytest.approx(3e-4)
    with pytest.raises(ConfigError, match=r"optim\.lr: expected a number, got 'fast'"):
        load_config(Run, path, ["optim.lr=fast"])
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['lr2'\]"):
        load_config(Run, path, ["optim.lr2=1"])
    with pytest.raises(ConfigError, match=r"optim\.steps: expected int"):
        load_config(Run, path, ["optim.steps=many"])
