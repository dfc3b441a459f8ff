"""Shared fixtures. Real-data tests read ETT from INFORMER_DATA_DIR (default ../shared/data/ETT-small).

When INFORMER_REQUIRE_REAL_DATA=1 (CI sets it) a missing data set fails the test instead of skipping it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ETT_DIR = REPO_ROOT.parent / "shared" / "data" / "ETT-small"


@pytest.fixture(autouse=True, scope="session")
def _few_threads() -> None:
    # The suite runs on 2-core CI machines; one intra-op thread keeps tests from oversubscribing.
    torch.set_num_threads(1)


def _require(path: Path) -> Path:
    if path.is_file():
        return path
    message = f"real data file {path} is missing; set INFORMER_DATA_DIR to the folder holding ETTh1.csv"
    if os.environ.get("INFORMER_REQUIRE_REAL_DATA") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def ett_dir() -> Path:
    directory = Path(os.environ.get("INFORMER_DATA_DIR", DEFAULT_ETT_DIR))
    _require(directory / "ETTh1.csv")
    return directory


@pytest.fixture(scope="session")
def etth1_csv(ett_dir: Path) -> Path:
    return _require(ett_dir / "ETTh1.csv")
