"""Execute-k-then-replan, kept under its original name; see `chunk_policies` for all policies."""

from __future__ import annotations

from koch_policy.chunk_policies import ExecuteKThenReplan as ChunkQueue

__all__ = ["ChunkQueue"]
