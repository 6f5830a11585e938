"""Shared test helpers: paths of the bundled IPS captures and schema."""

from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
CAPTURES = DATA / "captures"


@pytest.fixture
def capture() -> CaptureReader:
    return CaptureReader()


class CaptureReader:
    def __call__(self, name: str) -> bytes:
        return (CAPTURES / name).read_bytes()
