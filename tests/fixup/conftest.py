"""Fix-up fixtures: a tiny Real-ESRGAN file (spandrel imported for real) and a dataset with
one image of each problem the quality checks flag."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.esrgan import import_spandrel_for_tests, write_tiny_esrgan
from tests.fixup.data import make_flagged_dataset


@pytest.fixture(scope="session")
def tiny_esrgan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import_spandrel_for_tests()
    return write_tiny_esrgan(tmp_path_factory.mktemp("esrgan") / "tiny-x4.safetensors")


@pytest.fixture
def flagged_dataset(tmp_path: Path) -> Path:
    """See :func:`tests.fixup.data.make_flagged_dataset`."""
    return make_flagged_dataset(tmp_path / "data")
