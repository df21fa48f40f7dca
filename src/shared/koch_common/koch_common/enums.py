"""An enum whose members are their string values, for kinds that travel as text (YAML keys, ROS
parameters, /diagnostics keys).

It is Python 3.11's `enum.StrEnum`, written out because ROS 2 Humble runs Python 3.10.
"""

from __future__ import annotations

from enum import Enum


class StrEnum(str, Enum):
    """Members compare equal to, hash like, and print as their values."""

    def __str__(self) -> str:
        return str(self.value)
