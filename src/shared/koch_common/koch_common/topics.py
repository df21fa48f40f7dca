"""Topic names from `config/topics.yaml`, the single place they are declared."""

from __future__ import annotations

from functools import lru_cache

from koch_common.config import ConfigError, read_yaml


@lru_cache(maxsize=1)
def topics() -> dict[str, str]:
    return {str(k): str(v) for k, v in read_yaml("topics.yaml").items()}


def topic(key: str) -> str:
    names = topics()
    if key not in names:
        raise ConfigError(f"topic key {key!r} is not in config/topics.yaml; known keys: {sorted(names)}")
    return names[key]
