"""The real rasters in the shared test data (see its README); tests skip only if absent,
and fail if absent under CI."""

from __future__ import annotations

from pathlib import Path

import pytest

from support import missing_prerequisite

IMAGERY_DIR = Path(__file__).resolve().parents[3] / "../shared/data/imagery"


@pytest.fixture(scope="session")
def imagery_dir() -> Path:
    if not (IMAGERY_DIR / "cogeo.tif").exists():
        missing_prerequisite(f"shared test imagery not found at {IMAGERY_DIR}")
    return IMAGERY_DIR
