"""docs/containers.md's recipe for Beam's portable runners, as far as this machine runs it: the
daemon started on its own (`modelshared --foreground`, what the image's entrypoint or the
node's DaemonSet does), a Beam pipeline (DirectRunner, 4 worker processes) whose workers only
connect (MODELSHARE_NO_AUTOSTART=1, as in a pod) shares one load through the drop-in; and the
same pipeline with no daemon fails with a message that names the socket it looked for."""
import json
import os
import subprocess
import sys
import textwrap

from testlib import wait_until

PIPELINE = textwrap.dedent("""
    import json, os, sys
    import numpy as np
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from modelshare.beam import MultiProcessShared
    import recipe_model

    class Predict(beam.DoFn):
        def __init__(self, shared):
            self._shared = shared
        def setup(self):
            self._model = self._shared.acquire()
        def process(self, i):
            yield json.dumps([i, float(self._model(np.full((1, 4), i, np.float32))[0, 0]),
                              os.getpid()])

    shared = MultiProcessShared(recipe_model.make, tag="recipe", keep_alive=60)
    opts = PipelineOptions(runner="DirectRunner", direct_running_mode="multi_processing",
                           direct_num_workers=4)
    with beam.Pipeline(options=opts) as p:
        (p | beam.Create(list(range(100))) | beam.Reshuffle() | beam.ParDo(Predict(shared))
         | beam.io.WriteToText(sys.argv[1]))
""")

MODEL = textwrap.dedent("""
    def make():
        return lambda x: x * 3
""")


def run_pipeline(tmp_path, sock):
    (tmp_path / "recipe_model.py").write_text(MODEL)
    (tmp_path / "pipeline.py").write_text(PIPELINE)
    env = dict(os.environ, MODELSHARE_SOCKET=str(sock), MODELSHARE_NO_AUTOSTART="1",
               PYTHONPATH=str(tmp_path))
    return subprocess.run([sys.executable, "pipeline.py", str(tmp_path / "out")], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)


def test_beam_workers_use_a_daemon_they_did_not_start(tmp_path):
    import modelshare
    package = os.path.dirname(modelshare.__file__)
    sock = tmp_path / "run" / "modelshared.sock"
    log = open(tmp_path / "daemon.log", "w")
    daemon = subprocess.Popen([f"{package}/modelshared", "--foreground", "--socket", str(sock)],
                              stdout=log, stderr=log)
    try:
        wait_until(lambda: sock.exists(), what="the daemon's socket")
        r = run_pipeline(tmp_path, sock)
        assert r.returncode == 0, r.stderr[-3000:]
        rows = [json.loads(line) for f in tmp_path.glob("out*")
                for line in f.read_text().splitlines()]
        assert sorted(i for i, _, _ in rows) == list(range(100))
        assert all(y == 3.0 * i for i, y, _ in rows)
        st = subprocess.run([f"{package}/modelshare", "status", "--json"], capture_output=True,
                            text=True, env=dict(os.environ, MODELSHARE_SOCKET=str(sock)))
        (m,) = json.loads(st.stdout)["models"]
        assert m["tag"] == "recipe" and m["loads"] == 1, m
        print(f"beam: {len({pid for _, _, pid in rows})} worker processes, one load")
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
        log.close()


def test_without_the_daemon_the_message_names_the_socket(tmp_path):
    sock = tmp_path / "nowhere" / "modelshared.sock"
    r = run_pipeline(tmp_path, sock)
    assert r.returncode != 0
    assert f"no daemon answers at {sock}" in r.stderr, r.stderr[-3000:]
    assert "MODELSHARE_NO_AUTOSTART=1: start one there" in r.stderr
    assert not sock.exists()  # nothing was started
