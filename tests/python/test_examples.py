"""The examples in examples/python run as written, each against this test's daemon."""
import os
import pathlib
import subprocess
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples" / "python"


@pytest.mark.parametrize("script, args", [
    ("multiprocessing_pool.py", []),
    ("web_server.py", ["--demo"]),
    ("aiohttp_server.py", ["--demo"]),
    ("dask_map.py", []),
    ("beam_pipeline.py", []),
])
def test_example_runs(daemon, tmp_path, script, args):
    r = subprocess.run([sys.executable, str(EXAMPLES / script), *args], cwd=tmp_path,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300,
                       env=os.environ.copy())
    assert r.returncode == 0, r.stdout[-4000:]
    assert "loads: 1" in r.stdout, r.stdout[-4000:]
