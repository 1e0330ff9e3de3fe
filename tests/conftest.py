"""Shared test fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def shared_data_root() -> Path | None:
    """``$XRAYLENS_DATA`` or ``../shared/data`` beside the repository, when it exists."""
    candidates = [os.environ.get("XRAYLENS_DATA"), REPO.parent / "shared" / "data"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "covid-chestxray").is_dir():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real chest X-rays (``../shared/data``); skips the test when they are absent."""
    root = shared_data_root()
    if root is None:
        pytest.skip("real data ../shared/data not present")
    return root


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield
