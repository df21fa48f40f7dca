"""Fixtures of the runtime's tests: the tiny checkpoint of tiny_checkpoint.py, built once per session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from tiny_checkpoint import save_tiny_checkpoint


@pytest.fixture(scope="session")
def tiny_checkpoint_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny_checkpoint") / "pretrained_model")


@pytest.fixture
def tiny_checkpoint(tiny_checkpoint_source: Path, tmp_path: Path) -> Path:
    """A fresh copy of the tiny checkpoint's pretrained_model folder, for a test to alter."""
    folder = tmp_path / "checkpoint" / "pretrained_model"
    shutil.copytree(tiny_checkpoint_source, folder)
    return folder
