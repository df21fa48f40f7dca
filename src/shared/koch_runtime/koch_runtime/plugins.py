"""Policy types other packages add to LeRobot's registry, found through Python entry points.

A package that ships a policy (a config class registered with `@PreTrainedConfig.register_subclass`
plus its modeling / processor modules, LeRobot's plugin convention) declares in its setup.py

    entry_points={"koch_runtime.policies": ["<policy type> = <module that registers it>"]}

and the runtimes import every such module before building or loading a policy, so its type is
buildable and its checkpoints loadable. The runtime names no package of a later stage: what is
installed beside it decides which plugins exist. A plugin that is declared but fails to import raises
PolicyPluginError; it is never skipped.

Entry points live in the installed package metadata: the colcon build writes it (`<pkg>.egg-info`,
on PYTHONPATH once `scripts/env.sh` is sourced), and test/conftest.py writes it for the source tree
when pytest runs without a built workspace.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

POLICY_PLUGIN_GROUP = "koch_runtime.policies"


class PolicyPluginError(ImportError):
    """A policy plugin declared in the entry point group failed to import."""


def policy_plugins() -> list[EntryPoint]:
    """The declared policy plugins (entry points of POLICY_PLUGIN_GROUP), sorted by name."""
    return sorted(entry_points(group=POLICY_PLUGIN_GROUP), key=lambda entry: entry.name)


def register_policy_plugins() -> list[str]:
    """Import every declared policy plugin (registering its types with LeRobot); returns their names.

    Importing is idempotent and cheap after the first time (Python caches modules).
    """
    plugins = policy_plugins()
    for entry in plugins:
        try:
            entry.load()
        except Exception as exc:
            where = f" (package {entry.dist.name})" if entry.dist is not None else ""
            raise PolicyPluginError(
                f"policy plugin {entry.name!r} = {entry.value!r}{where} failed to import: {exc!r}. Fix the plugin, "
                f"or remove its `{POLICY_PLUGIN_GROUP}` entry point and rebuild (bash scripts/setup.sh)"
            ) from exc
    return [entry.name for entry in plugins]
