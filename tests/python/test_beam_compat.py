"""Apache Beam's own test file for MultiProcessShared, run against modelshare.beam.

The file is read from the installed apache-beam wheel (apache_beam/utils/
multi_process_shared_test.py), never copied into this tree. The adapter changes one line, the
import of the module under test, writes the result to a temporary folder and runs it with pytest
in a child process against this test's private daemon. Every test passes except the ones listed
in BEAM_INTERNALS, which check how Beam's own implementation works rather than what its users
get; each is listed with the reason.
"""
import os
import pathlib
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

beam_utils = pytest.importorskip("apache_beam.utils")

BEAM_TEST = pathlib.Path(beam_utils.__file__).parent / "multi_process_shared_test.py"
IMPORT = "from apache_beam.utils import multi_process_shared\n"
ADAPTED = "from modelshare import beam as multi_process_shared\n"

# Tests of Beam's internals, with why a drop-in does not (and should not) copy them.
BEAM_INTERNALS = {
    # Look for the object's server among multiprocessing.active_children() of the test process:
    # Beam's server is a child of the first acquirer. modelshare's worker is a child of the
    # daemon, so that it outlives the process that loaded it and is supervised and restarted.
    "MultiProcessSharedSpawnProcessTest::test_process_exits_on_unsafe_hard_delete":
        "the server is a multiprocessing child of the test process",
    "MultiProcessSharedSpawnProcessTest::test_process_exits_on_unsafe_hard_delete_with_manager":
        "the server is a multiprocessing child of the test process",
    # Checks that acquire() reaps Beam's own zombie server processes; the daemon reaps ours.
    "MultiProcessSharedSpawnProcessTest::test_zombie_reaping_on_acquire":
        "acquire() reaps Beam's zombie server processes",
    # Patches Beam's multiprocessing manager class (_SingletonRegistrar.connect) to fail once.
    "MultiProcessSharedSpawnProcessTest::test_transient_connection_error_recovery":
        "patches Beam's _SingletonRegistrar, a multiprocessing manager",
}


def _adapted_copy(tmp):
    text = BEAM_TEST.read_text()
    assert text.count(IMPORT) == 1, f"{BEAM_TEST}: expected one line {IMPORT!r}"
    out = tmp / "multi_process_shared_test.py"
    out.write_text(text.replace(IMPORT, ADAPTED))
    return out


def _results(xml_path):
    """{Class::test: "passed" | "failed" | "skipped"} from pytest's JUnit XML."""
    results = {}
    for case in ET.parse(xml_path).getroot().iter("testcase"):
        name = f"{case.get('classname').rsplit('.', 1)[-1]}::{case.get('name')}"
        if case.find("failure") is not None or case.find("error") is not None:
            results[name] = "failed"
        elif case.find("skipped") is not None:
            results[name] = "skipped"
        else:
            results[name] = "passed"
    return results


def test_beams_own_tests_pass_against_the_drop_in(daemon, tmp_path):
    work = tmp_path / "beam"
    work.mkdir()
    test_file = _adapted_copy(work)
    xml = tmp_path / "results.xml"
    deselect = [f"--deselect={test_file.name}::{name}" for name in BEAM_INTERNALS]
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}",
         "--rootdir", str(work), *deselect, str(test_file)],
        cwd=work, env=dict(os.environ), capture_output=True, text=True, timeout=600)
    report = run.stdout[-6000:] + run.stderr[-2000:]
    results = _results(xml)
    failed = sorted(n for n, r in results.items() if r != "passed")
    assert not failed, f"Beam's tests that failed: {failed}\n{report}"
    # Every test of the file ran or is a listed internal: nothing skipped silently.
    collect = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "--collect-only", "-p", "no:cacheprovider",
         "--rootdir", str(work), str(test_file)],
        cwd=work, env=dict(os.environ), capture_output=True, text=True, timeout=120)
    collected = {line.split("::", 1)[1] for line in collect.stdout.splitlines()
                 if line.startswith(test_file.name + "::")}
    assert set(BEAM_INTERNALS) <= collected, sorted(set(BEAM_INTERNALS) - collected)
    assert set(results) == collected - set(BEAM_INTERNALS), (sorted(results), sorted(collected))
    assert len(results) >= 14, report
    assert run.returncode == 0, report
