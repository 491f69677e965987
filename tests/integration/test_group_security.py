"""Group mode isolates the members from each other (docs/SECURITY.md, "Group mode").

A daemon started as root with --group serves two members, A and B, of a group made for the test
(bare uids and a gid that no account or group of this machine has, new each run). B tries against
A what issue 21 found: reading A's inputs from its own python model through /proc, swapping and
unloading A's model, loading files only root or A may read as dense weights, and seeing A's
models and pids in status. A second daemon, run as a service uid without root, refuses the python
backend and weights files to the other members. Root runs these (CI does); elsewhere they skip.
"""
import json
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import tempfile

import pytest

from conftest import BUILD, CLI, wait_until

HERE = pathlib.Path(__file__).resolve().parent
DAEMON = BUILD / "modelshared"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root: it runs processes as member uids it picks (CI runs "
    "tests as root)")


def unused_ids(n):
    """n numbers that are neither a uid nor a gid of this machine's accounts."""
    import grp
    import pwd
    taken = {p.pw_uid for p in pwd.getpwall()} | {g.gr_gid for g in grp.getgrall()}
    ids = set()
    while len(ids) < n:
        i = random.randint(48000, 59999)
        if i not in taken:
            ids.add(i)
    return sorted(ids)


class Member:
    """A uid in the test's group: runs programs as itself."""

    def __init__(self, uid, gid, env):
        self.uid, self.gid, self.env = uid, gid, env

    def _become(self):
        os.setgroups([self.gid])
        os.setgid(self.uid)
        os.setuid(self.uid)

    def popen(self, argv, **kw):
        return subprocess.Popen([str(a) for a in argv], env=self.env, preexec_fn=self._become,
                                cwd=self.env["MS_TEST_WORK"], **kw)

    def run(self, argv):
        p = self.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, err = p.communicate(timeout=180)
        return p.returncode, out, err

    def python(self, *args):
        """group_member.py ACTION TAG as this member: its JSON outcome."""
        rc, out, err = self.run([self.env["MS_TEST_PYTHON"], "group_member.py", *args])
        assert rc == 0, f"{args}: exit {rc}: {out}{err}"
        return json.loads(out.strip().splitlines()[-1])

    def cli(self, *args):
        return self.run([CLI, *args])


class Holder:
    """A's process that holds a lease on its echo model and calls it on request."""

    def __init__(self, member, tag, shared_with):
        self.proc = member.popen([member.env["MS_TEST_PYTHON"], "group_member.py", "hold",
                                  tag, shared_with], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().strip()
        assert line == "acquired", f"holder of {tag}: {line!r}"

    def calls(self, n):
        self.proc.stdin.write(f"call {n}\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def member_python(work, uid):
    """An interpreter a member can run with this test's packages (sys.path given as PYTHONPATH),
    or None: this one, unless it lives where other users cannot reach (a root-only pyenv)."""
    path = ":".join([str(work)] + [p for p in sys.path if p and os.path.isdir(p)])
    env = dict(os.environ, PYTHONPATH=path, PYTHONNOUSERSITE="1")

    def become():
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)

    for exe in (sys.executable, shutil.which("python3"), "/usr/bin/python3"):
        if exe is None:
            continue
        try:
            r = subprocess.run([exe, "-c", "import modelshare, numpy"], env=env, cwd=work,
                               preexec_fn=become, capture_output=True, timeout=60)
        except OSError:
            continue
        if r.returncode == 0:
            return exe, path
    return None, path


def start_daemon(work, group, as_uid=None):
    """modelshared --group in the foreground, as root or as as_uid; its process and socket."""
    run = work / (f"run-{as_uid}" if as_uid else "run")
    run.mkdir()
    os.chmod(run, 0o755)
    if as_uid is not None:
        os.chown(run, as_uid, group)
    sock = run / "s" / "modelshared.sock"
    log = open(work / f"daemon-{as_uid or 0}.log", "w")

    def become():
        if as_uid is not None:
            os.setgroups([group])
            os.setgid(group)
            os.setuid(as_uid)

    env = dict(os.environ, MODELSHARE_SOCKET=str(sock))
    p = subprocess.Popen([DAEMON, "--socket", sock, "--group", str(group), "--foreground",
                          "--idle-exit", "0", "--log-level", "debug"], env=env, stdout=log,
                         stderr=log, preexec_fn=become)
    wait_until(lambda: sock.exists() or p.poll() is not None, what="the daemon's socket")
    assert p.poll() is None, (work / f"daemon-{as_uid or 0}.log").read_text()
    return p, sock


def stop_daemon(p):
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=60)


@pytest.fixture(scope="module")
def world():
    """The group, members A and B, a root daemon with --group, and A holding two models: "a-own"
    (not shared) and "a-shared" (shared_with "group"), each called with SECRET-A bytes."""
    gid, a_uid, b_uid, s_uid = unused_ids(4)
    work = pathlib.Path(tempfile.mkdtemp(prefix="msgroup-", dir="/tmp"))
    os.chmod(work, 0o755)
    for helper in ("group_member.py", "group_models.py"):  # where the members can read them
        shutil.copy(HERE / helper, work / helper)
        os.chmod(work / helper, 0o644)
    exe, path = member_python(work, a_uid)
    if exe is None:
        shutil.rmtree(work)
        pytest.skip("no python interpreter with numpy and modelshare that other uids may run")
    p, sock = start_daemon(work, gid)
    tmp = work / "tmp"
    tmp.mkdir(mode=0o1777)
    os.chmod(tmp, 0o1777)
    env = dict(os.environ, MODELSHARE_SOCKET=str(sock), MODELSHARE_NO_AUTOSTART="1",
               PYTHONPATH=path, PYTHONNOUSERSITE="1", MS_TEST_PYTHON=exe, MS_TEST_WORK=str(work),
               TMPDIR=str(tmp))
    w = type("World", (), {})()
    w.work, w.gid, w.sock, w.daemon, w.env, w.s_uid = work, gid, sock, p, env, s_uid
    w.a, w.b = Member(a_uid, gid, env), Member(b_uid, gid, env)
    holders = []
    try:
        holders.append(Holder(w.a, "a-own", "owner"))
        holders.append(Holder(w.a, "a-shared", "group"))
        w.own, w.shared = holders
        yield w
    finally:
        for h in holders:
            h.close()
        stop_daemon(p)
        shutil.rmtree(work, ignore_errors=True)


def root_status(w):
    r = subprocess.run([CLI, "status", "--json"], env=w.env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def model(st, tag):
    return next(m for m in st["models"] if m["tag"] == tag)


def test_workers_of_a_members_model_run_as_that_member(world):
    st = root_status(world)
    for tag in ("a-own", "a-shared"):
        m = model(st, tag)
        assert m["owner_uid"] == world.a.uid
        # The root daemon still measures them (/proc/PID/smaps_rollup of another uid's process).
        assert m["memory_measured"] and m["memory_bytes"] > 0, m
        for pid in m["worker_pids"]:
            uids = pathlib.Path(f"/proc/{pid}/status").read_text().split("Uid:")[1].split()[:4]
            assert uids == [str(world.a.uid)] * 4, (tag, uids)
            caps = pathlib.Path(f"/proc/{pid}/status").read_text()
            assert "NoNewPrivs:\t1" in caps
            assert "CapEff:\t0000000000000000" in caps and "CapPrm:\t0000000000000000" in caps
            # Not dumpable: even A's other processes cannot read the arenas it maps (those of
            # every member that uses a model A shares).
            rc, out, err = world.a.run([world.env["MS_TEST_PYTHON"], "-c",
                                        f"import os; os.listdir('/proc/{pid}/fd')"])
            assert rc != 0 and "PermissionError" in err, (tag, out, err)


def test_a_members_python_model_cannot_read_another_members_inputs(world):
    r = world.b.python("snoop", "b-snoop")
    assert r["ok"], r
    v = r["value"]
    assert v["uid"] == world.b.uid  # B's code runs as B, not as the daemon
    assert v["found"] == 0, v  # no SECRET-A from A's arenas, the daemon's or A's workers'
    # Neither B's worker nor B itself lists the daemon's or A's workers' descriptors.
    st = root_status(world)
    for pid in [world.daemon.pid] + model(st, "a-own")["worker_pids"]:
        rc, out, err = world.b.run([world.env["MS_TEST_PYTHON"], "-c",
                                    f"import os; os.listdir('/proc/{pid}/fd')"])
        assert rc != 0 and "PermissionError" in err, (pid, out, err)


def test_another_members_model_cannot_be_swapped(world):
    r = world.b.python("swap", "a-own")
    assert not r["ok"] and r["error"] == "PermissionDenied", r
    assert f"belongs to uid {world.a.uid}" in r["message"], r
    assert world.own.calls(16) == {"errors": 0, "wrong": 0}
    assert not (world.work / "tmp" / "stolen.bin").exists()
    assert model(root_status(world), "a-own")["swapping"] is False


def test_another_members_model_cannot_be_unloaded(world):
    for tag in ("a-own", "a-shared"):
        r = world.b.python("unload", tag)
        assert not r["ok"] and r["error"] == "PermissionDenied", r
        assert f"belongs to uid {world.a.uid}" in r["message"], r
        rc, out, err = world.b.cli("unload", tag, "--force")
        assert rc == 1 and "only its owner or root may unload it" in err, err
    # The owner's own plain unload is refused while leases exist, without the lessees' pids.
    rc, out, err = world.a.cli("unload", "a-shared")
    assert rc == 1 and "has 1 lease (client pids not shown to group members)" in err, err
    assert str(world.shared.proc.pid) not in err
    assert world.own.calls(16) == {"errors": 0, "wrong": 0}
    assert world.shared.calls(16) == {"errors": 0, "wrong": 0}
    st = root_status(world)
    assert model(st, "a-own")["state"] == "ready" and model(st, "a-own")["leases"] == 1


def test_a_model_not_shared_with_the_group_is_refused_to_others(world):
    r = world.b.python("acquire", "a-own")
    assert not r["ok"] and r["error"] == "PermissionDenied", r
    assert "not shared_with \"group\"" in r["message"], r
    r = world.b.python("acquire", "a-shared")
    assert r["ok"] and r["value"] == {"errors": 0, "wrong": 0}, r


@pytest.mark.parametrize("owner", ["root", "a"])
def test_weights_are_opened_with_the_members_rights(world, owner):
    secret = world.work / f"secret-{owner}.bin"
    secret.write_bytes(b"TOPSECRET-" + bytes(range(256)) * 64)
    os.chmod(secret, 0o600)
    if owner == "a":
        os.chown(secret, world.a.uid, world.a.uid)
    rc, out, err = world.b.cli("load", f"b-dense-{owner}", "--backend", "dense", "--weights",
                               secret)
    assert rc == 1, (out, err)
    assert "header length" not in err and "TOPSECRE" not in err, err
    assert "ermission denied" in err, err


def test_status_shows_a_member_only_what_it_may_use(world):
    st = root_status(world)
    a_pids = {p for tag in ("a-own", "a-shared") for p in model(st, tag)["worker_pids"]}
    assert a_pids
    r = world.b.python("status", "-")
    assert r["ok"], r
    seen = r["value"]
    tags = {m["tag"] for m in seen["models"]}
    assert "a-own" not in tags and "a-shared" in tags, tags
    shared = model(seen, "a-shared")
    assert shared["worker_pids"] == [] and all(i["pid"] is None for i in shared["instances"])
    assert all("a-own" not in b["models"] for b in seen["budgets"].values())
    for m in seen["models"]:
        assert not a_pids & set(m["worker_pids"]), m
    # A sees both of its own, with their workers' pids.
    mine = world.a.python("status", "-")["value"]
    assert {m["tag"] for m in mine["models"]} >= {"a-own", "a-shared"}
    assert set(model(mine, "a-own")["worker_pids"]) <= a_pids
    assert model(mine, "a-own")["worker_pids"]


def test_a_group_daemon_without_root_refuses_members_python_and_weights(world):
    p, sock = start_daemon(world.work, world.gid, as_uid=world.s_uid)
    env = dict(world.env, MODELSHARE_SOCKET=str(sock))
    b = Member(world.b.uid, world.gid, env)
    try:
        r = b.python("acquire", "b-python")
        assert not r["ok"] and r["error"] == "PermissionDenied", r
        assert "run your own daemon" in r["message"], r
        rc, out, err = b.cli("load", "b-dense", "--backend", "dense", "--weights",
                             world.work / "any.safetensors")
        assert rc == 1 and "refuses a weights file" in err, err
        # What needs neither is served (its worker runs as the service).
        rc, out, err = b.cli("load", "b-ident", "--spec", '{"backend":"identity"}')
        assert rc == 0, err
    finally:
        stop_daemon(p)


def test_a_members_workers_get_its_home_and_name(world):
    """A member the system knows by name: its workers' HOME, USER and LOGNAME are its own (a
    framework's caches go to its home, not the daemon's)."""
    if shutil.which("useradd") is None or shutil.which("userdel") is None:
        pytest.skip("useradd/userdel are not installed")
    (uid,) = unused_ids(1)
    name, home = f"mst{uid}", f"/nonexistent/mst{uid}"
    subprocess.run(["useradd", "-M", "-N", "-u", str(uid), "-d", home, name], check=True,
                   capture_output=True)
    try:
        rc, out, err = Member(uid, world.gid, world.env).cli(
            "load", "c-ident", "--spec", '{"backend":"identity"}')
        assert rc == 0, err
        (pid,) = model(root_status(world), "c-ident")["worker_pids"]
        environ = pathlib.Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        for want in (f"HOME={home}", f"USER={name}", f"LOGNAME={name}",
                     "MODELSHARE_WORKER_NODUMP=1"):
            assert want.encode() in environ, want
        rc, out, err = world.b.cli("unload", "c-ident")
        assert rc == 1 and f"belongs to uid {uid} ({name})" in err, err
    finally:
        subprocess.run([CLI, "unload", "c-ident"], env=world.env, capture_output=True)
        subprocess.run(["userdel", name], capture_output=True)


def test_a_members_interpreter_is_checked_with_its_rights(world):
    """The daemon looks at a python spec's interpreter as the member would: one in a folder only
    root may enter is "Permission denied", before any worker starts (no oracle for what root sees,
    no worker exec'd in vain)."""
    hidden = world.work / "root-only"
    hidden.mkdir(mode=0o700)
    exe = hidden / "python3"
    exe.symlink_to(os.path.realpath(world.env["MS_TEST_PYTHON"]))
    spec = {"backend": "python", "python": {"constructor": "eA==", "executable": str(exe),
                                            "cwd": str(world.work), "path": []}}
    rc, out, err = world.b.cli("load", "b-hidden", "--spec", json.dumps(spec))
    assert rc == 1, (out, err)
    assert f"interpreter {exe}: expected an executable file, got Permission denied" in err, err
