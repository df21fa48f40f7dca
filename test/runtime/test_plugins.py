"""Policy plugins come from the `koch_runtime.policies` entry points; a broken one is an error, never skipped."""

from __future__ import annotations

from pathlib import Path

import pytest
from lerobot.configs.policies import PreTrainedConfig

from koch_runtime.build import build_policy
from koch_runtime.plugins import POLICY_PLUGIN_GROUP, PolicyPluginError, policy_plugins, register_policy_plugins


def test_kuavo_trains_policy_is_declared_and_registered_with_lerobot() -> None:
    declared = {entry.name: entry.value for entry in policy_plugins()}
    assert declared.get("rgbd_diffusion") == "kuavo_train.policies"
    assert "rgbd_diffusion" in register_policy_plugins()
    assert "rgbd_diffusion" in PreTrainedConfig.get_known_choices()


def install_plugin(site: Path, name: str, module: str, source: str | None) -> None:
    """A distribution in `site` declaring policy plugin `name` = `module` (with `source` as its code)."""
    info = site / f"{name}_plugin-0.0.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}-plugin\nVersion: 0.0.0\n")
    (info / "entry_points.txt").write_text(f"[{POLICY_PLUGIN_GROUP}]\n{name} = {module}\n")
    if source is not None:
        (site / f"{module}.py").write_text(source)


def test_a_plugin_that_fails_to_import_raises_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_plugin(tmp_path, "broken", "broken_policy_module", "raise RuntimeError('missing weights table')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "broken" in [entry.name for entry in policy_plugins()]
    expected = (r"policy plugin 'broken' = 'broken_policy_module' \(package broken-plugin\) failed to import: "
                r"RuntimeError\('missing weights table'\)")
    with pytest.raises(PolicyPluginError, match=expected):
        register_policy_plugins()
    # Building (and loading) a policy registers the plugins first: the error surfaces there too.
    with pytest.raises(PolicyPluginError, match="policy plugin 'broken'"):
        build_policy("act", {}, {}, {}, [])


def test_a_declared_plugin_that_is_not_installed_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_plugin(tmp_path, "absent", "no_such_policy_module", None)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PolicyPluginError, match="'absent' = 'no_such_policy_module'.*ModuleNotFoundError"):
        register_policy_plugins()
