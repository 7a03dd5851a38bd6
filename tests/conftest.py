"""Shared test set-up: never reach the network; shared layouts location."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

REPO = Path(__file__).resolve().parent.parent
LAYOUTS = REPO.parent / "shared" / "layouts"


@pytest.fixture(scope="session")
def layouts_dir() -> Path:
    if not LAYOUTS.is_dir():
        pytest.fail(f"{LAYOUTS} is missing: the shared layouts must lie beside this checkout")
    return LAYOUTS
