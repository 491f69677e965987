"""GPU tests: the fixtures of tests/integration (a private daemon per test), skipped as a whole
with the reason when this machine has no usable NVIDIA GPU."""
import importlib.util
import pathlib
import sys

import pytest

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
_spec = importlib.util.spec_from_file_location(
    "ms_integration", HERE.parent / "integration" / "conftest.py")
base = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(base)
ms = base.ms  # the fixture

from nvml import probe  # noqa: E402

NV, WHY = probe()


def pytest_collection_modifyitems(config, items):
    if NV is None:
        for item in items:
            item.add_marker(pytest.mark.skip(reason=WHY))


@pytest.fixture
def nv():
    return NV
