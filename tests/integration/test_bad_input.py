"""The bad input catalogue: one table of malformed inputs at every boundary (control frames, ring
records, specs, tags, weights files, .npy files, shapes, dtypes, sizes, method calls). Each case
must get its specific MS_E_* code and a message with a distinctive piece of what was expected;
after each case the daemon still answers and another client's model still serves correct
answers. The table is printed at the end (pytest -s, or in the last test's output)."""
import array
import fcntl
import json
import os
import re
import socket
import struct
import subprocess

import numpy as np
import pytest
from safetensors.numpy import save_file

from conftest import BUILD, ROOT, SANITIZED, Modelshare, mlp_reference

ABUSECLIENT = BUILD / "tests" / "ms-abuseclient"
WIDTH = 6  # the victim model's input width

CODES = {name: -int(v) for name, v in re.findall(
    r"X\((\w+), -(\d+),", (ROOT / "include" / "modelshare.h").read_text())}
RESULTS = []  # (boundary, case, expected code, expected text, what came)


class World:
    """One daemon for the whole catalogue; a reference client holding a dense model whose answers
    are checked after every case, and a victim model the cases aim at."""

    def __init__(self, tmp):
        self.ms = Modelshare(tmp)
        self.tmp = tmp
        self.ref_weights = self.ms.make_dense("ref.safetensors", [5, 7, 3], seed=4)
        self.ref = self.ms.session("ref", {"backend": "dense", "weights": str(self.ref_weights)})
        assert self.ref.ok, self.ref.first
        self.victim_weights = self.ms.make_dense("victim.safetensors", [WIDTH, 8, 2], seed=5)
        self.victim_spec = {"backend": "dense", "weights": str(self.victim_weights),
                            "keep_alive": 60}
        self.victim = self.ms.session("victim", self.victim_spec)
        assert self.victim.ok, self.victim.first
        self.rng = np.random.default_rng(9)

    def check_alive(self):
        """The daemon answers, and the reference model still computes the right thing."""
        st = self.ms.status()
        assert {m["tag"] for m in st["models"]} >= {"ref", "victim"}
        x = self.rng.standard_normal((3, 5)).astype(np.float32)
        y = self.ref.infer(x, self.tmp)
        assert not isinstance(y, str), y
        np.testing.assert_allclose(y, mlp_reference(self.ref_weights, x), rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = World(tmp_path_factory.mktemp("badinput"))
    yield w
    w.ms.stop()
    log = w.ms.log()
    if SANITIZED:
        for marker in ("AddressSanitizer", "LeakSanitizer", "runtime error:"):
            assert marker not in log, f"sanitizer report in the daemon's log:\n{log[-6000:]}"
    subprocess.run(["rm", "-rf", str(w.ms.dir)])


# --- control frames: raw bytes on the daemon's socket ---------------------------------------

def frame(obj_or_bytes):
    body = obj_or_bytes if isinstance(obj_or_bytes, bytes) else json.dumps(obj_or_bytes).encode()
    return struct.pack("<I", len(body)) + body


HELLO = frame({"op": "hello", "id": 1, "version": 4})


def frames_case(sends, hello=True):
    """Connects, says hello (unless not), sends each (bytes, fds) and returns the first error
    reply as (code, message), or ("OK", "") when every reply was ok. fds: how many descriptors
    of /dev/null go with the bytes, or a function that makes the descriptors (closed after)."""
    def run(w):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(20)
        s.connect(str(w.ms.socket))
        files = []
        try:
            if hello:
                s.sendall(HELLO)
                assert read_frame(s)["ok"]
            for data, nfds in sends:
                fds = []
                if callable(nfds):
                    fds = nfds()
                    files.extend(os.fdopen(fd, "rb", closefd=True) for fd in fds)
                    nfds = 0
                for _ in range(nfds):
                    f = open(os.devnull, "rb")
                    files.append(f)
                    fds.append(f.fileno())
                if fds:  # at most 253 in one sendmsg (the kernel's SCM_MAX_FD)
                    s.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                        array.array("i", fds))])
                else:
                    s.sendall(data)
            for _ in sends:
                reply = read_frame(s)
                if reply is None:
                    return "closed", ""
                if not reply.get("ok"):
                    return errname(reply["code"]), reply["error"]
            return "OK", ""
        finally:
            s.close()
            for f in files:
                f.close()
    return run


def read_frame(s):
    head = read_n(s, 4)
    if head is None:
        return None
    (n,) = struct.unpack("<I", head)
    return json.loads(read_n(s, n))


def read_n(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def errname(code):
    for name, v in CODES.items():
        if v == code:
            return "MS_E_" + name
    return f"code {code}"


# --- clients: the test client, the abuse client, the CLI ------------------------------------

def session_case(tag, spec):
    def run(w):
        s = w.ms.session(tag, spec)
        s.close()
        return split_error(s.first)
    return run


def split_error(line):
    m = re.match(r"error (MS_E_\w+) (.*)", line)
    return (m.group(1), m.group(2)) if m else (line, "")


def weights_case(make):
    def run(w):
        path = w.tmp / f"w-{make.__name__}.safetensors"
        make(path, w)
        return session_case(f"w-{make.__name__}", {"backend": "dense", "weights": str(path)})(w)
    return run


def infer_case(make):
    """An input for the victim model: make returns an array (saved with numpy) or raw bytes; the
    test client's answer, then the CLI's on the same file (exit 1, the same message)."""
    def run(w, arena=None):
        x = make(w)
        path = w.tmp / "bad-input.npy"
        if isinstance(x, bytes):
            path.write_bytes(x)
        else:
            np.save(path, x)
        out = w.tmp / "bad-out.npy"
        if arena is None:
            answer = w.victim.command(f"infer {path} {out}")
        else:
            env = dict(w.ms.env, MODELSHARE_ARENA_BYTES=arena)
            s = subprocess.run([str(BUILD / "tests" / "ms-testclient"), "session", "victim", "-"],
                               input=f"infer {path} {out}\n", capture_output=True, text=True,
                               env=env, timeout=60)
            answer = s.stdout.splitlines()[1] if len(s.stdout.splitlines()) > 1 else s.stdout
        code, msg = split_error(answer)
        env = dict(w.ms.env, **({"MODELSHARE_ARENA_BYTES": arena} if arena else {}))
        r = subprocess.run([str(BUILD / "modelshare"), "infer", "victim", "--input", str(path)],
                           capture_output=True, text=True, env=env, timeout=60)
        assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
        assert msg[:40] in r.stderr, (msg, r.stderr)
        return code, msg
    return run


def arena_case(make, arena):
    inner = infer_case(make)
    return lambda w: inner(w, arena=arena)


def ring_case(name):
    def run(w):
        r = subprocess.run([str(ABUSECLIENT), "ring", name, "victim", json.dumps(w.victim_spec)],
                           capture_output=True, text=True, env=w.ms.env, timeout=60)
        lines = r.stdout.splitlines()
        assert r.returncode == 0 and lines and lines[-1] == "ok", r.stdout + r.stderr
        first = lines[0].split(" ", 2)
        assert first[0] == name, lines
        return first[1], first[2] if len(first) > 2 else ""
    return run


def call_case(w):
    r = subprocess.run([str(ABUSECLIENT), "call", "victim", json.dumps(w.victim_spec)],
                       capture_output=True, text=True, env=w.ms.env, timeout=60)
    return split_error("error " + r.stdout.strip())


# --- weights files ----------------------------------------------------------------------------

def w_missing(path, w):
    pass


def w_truncated(path, w):
    data = w.victim_weights.read_bytes()
    path.write_bytes(data[:len(data) - 40])


def w_bad_header(path, w):
    path.write_bytes(struct.pack("<Q", 20) + b"{not json at all!!!}" + b"\0" * 16)


def w_header_too_long(path, w):
    path.write_bytes(struct.pack("<Q", 1 << 40) + b"{}")


def w_wrong_dtype(path, w):
    save_file({"0.weight": np.zeros((4, 3), np.int32), "0.bias": np.zeros(4, np.int32)},
              str(path))


def w_no_chain(path, w):
    save_file({"0.weight": np.zeros((16, 8), np.float32),
               "2.weight": np.zeros((4, 9), np.float32)}, str(path))


def w_no_layers(path, w):
    save_file({"embedding": np.zeros((4, 3), np.float32)}, str(path))


# --- .npy inputs -----------------------------------------------------------------------------

def npy_header(d):
    text = d.encode()
    pad = 64 - (10 + len(text) + 1) % 64
    text += b" " * pad + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text


GOOD_HDR = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, %d), }" % WIDTH

NPY = {
    "bad_magic": lambda w: b"\x93NUMPZ\x01\x00" + npy_header(GOOD_HDR)[8:] + b"\0" * 48,
    "bad_header": lambda w: npy_header("{'descr': '<f4', 'shape': (2, 6), }") + b"\0" * 48,
    "truncated": lambda w: npy_header(GOOD_HDR) + b"\0" * 20,
    "fortran": lambda w: npy_header(GOOD_HDR.replace("False", "True")) + b"\0" * 48,
    "big_endian": lambda w: npy_header(GOOD_HDR.replace("<f4", ">f4")) + b"\0" * 48,
    "object_dtype": lambda w: npy_header(GOOD_HDR.replace("'<f4'", "'|O'")) + b"\0" * 48,
}

# --- the catalogue ---------------------------------------------------------------------------
# (boundary, case, how, expected MS_E_* name, distinctive text of the expected in the message)

LONG_TAG = "t" * 300
PY_OK = {"constructor": "gASV", "executable": "/usr/bin/python3", "cwd": "/"}
# A constructor of 100 bytes in a memfd (src/common/ctorfd.h) instead of inline.
PY_MEMFD = {"constructor": None, "constructor_size": 100, "constructor_sha256": "a" * 64,
            "executable": "/usr/bin/python3", "cwd": "/"}
SEALED = fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL


def ctor_load(made, python=PY_MEMFD, op="load"):
    """A load (or acquire) of a python spec by hand, with descriptors made as each of made says:
    ("memfd", size, seals) or ("null",) (/dev/null)."""
    def make():
        fds = []
        for what in made:
            if what[0] == "null":
                fds.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
                continue
            fd = os.memfd_create("ctor", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
            os.write(fd, b"p" * what[1])
            if what[2]:
                fcntl.fcntl(fd, fcntl.F_ADD_SEALS, what[2])
            fds.append(fd)
        return fds
    msg = {"op": op, "id": 2, "tag": "ctor", "spec": {"backend": "python", "python": python},
           "nfds": len(made)}
    return frames_case([(frame(msg), make)])
CASES = [
    # control frames
    ("frame", "length_0", frames_case([(b"\0\0\0\0", 0)]), "MS_E_TOO_LARGE",
     "expected a frame length from 1 to"),
    ("frame", "over_limit", frames_case([(struct.pack("<I", (1 << 20) + 1) + b"{}", 0)]),
     "MS_E_TOO_LARGE", "expected a frame length from 1 to 1048576 bytes, got 1048577"),
    ("frame", "not_json", frames_case([(frame(b"{op: hello"), 0)]), "MS_E_PROTOCOL",
     "expected a JSON object in the frame, got invalid JSON"),
    ("frame", "not_object", frames_case([(frame(b"[1, 2, 3]"), 0)]), "MS_E_PROTOCOL",
     "expected a JSON object in the frame, got an array"),
    ("frame", "no_hello", frames_case([(frame({"op": "status", "id": 1}), 0)], hello=False),
     "MS_E_PROTOCOL", "expected \"hello\" as the first request"),
    ("frame", "hello_version", frames_case([(frame({"op": "hello", "id": 1, "version": 99}), 0)],
                                            hello=False), "MS_E_VERSION", "speaks version 4"),
    # Version 3 had the door in one page that every client mapped read-write (ring.h).
    ("frame", "hello_version_3", frames_case([(frame({"op": "hello", "id": 1, "version": 3}), 0)],
                                              hello=False), "MS_E_VERSION", "speaks version 4"),
    ("frame", "hello_version_type",
     frames_case([(frame({"op": "hello", "id": 1, "version": "1"}), 0)], hello=False),
     "MS_E_PROTOCOL", "expected an integer \"version\""),
    ("frame", "unknown_op", frames_case([(frame({"op": "reboot", "id": 2}), 0)]),
     "MS_E_PROTOCOL", "unknown op \"reboot\": expected hello, acquire"),
    ("frame", "op_not_string", frames_case([(frame({"op": 7, "id": 2}), 0)]), "MS_E_PROTOCOL",
     "expected a string \"op\""),
    ("frame", "missing_id", frames_case([(frame({"op": "status"}), 0)]), "MS_E_PROTOCOL",
     "expected an integer \"id\""),
    ("frame", "id_not_integer", frames_case([(frame({"op": "status", "id": "x"}), 0)]),
     "MS_E_PROTOCOL", "expected an integer \"id\""),
    ("frame", "tag_not_string", frames_case([(frame({"op": "load", "id": 2, "tag": 5,
                                                     "spec": {"backend": "identity"}}), 0)]),
     "MS_E_PROTOCOL", "load: expected a string \"tag\", got an integer"),
    ("frame", "lease_not_integer",
     frames_case([(frame({"op": "release", "id": 2, "lease": "7"}), 0)]), "MS_E_PROTOCOL",
     "release: expected an integer \"lease\", got a string"),
    ("frame", "lease_not_held", frames_case([(frame({"op": "release", "id": 2, "lease": 1}), 0)]),
     "MS_E_INVAL", "expected a lease held by this connection"),
    ("frame", "spec_not_object",
     frames_case([(frame({"op": "load", "id": 2, "tag": "x", "spec": "dense"}), 0)]),
     "MS_E_SPEC", "expected \"spec\" to be a JSON object"),
    ("frame", "fds_declared_not_sent",
     frames_case([(frame({"op": "acquire", "id": 2, "tag": "victim", "nfds": 1}), 0)]),
     "MS_E_PROTOCOL", "message declares 1 descriptor(s) but 0 came with it"),
    ("frame", "acquire_without_fd",
     frames_case([(frame({"op": "acquire", "id": 2, "tag": "victim"}), 0)]),
     "MS_E_PROTOCOL", "acquire: expected 1 descriptor (the arena memfd"),
    ("frame", "nfds_over_limit",
     frames_case([(frame({"op": "status", "id": 2, "nfds": 129}), 129)]), "MS_E_PROTOCOL",
     "expected \"nfds\" to be an integer from 0 to 128"),
    ("frame", "fd_flood", frames_case([(frame({"op": "status", "id": 2}), 200),
                                       (frame({"op": "status", "id": 3}), 200)]),
     "MS_E_LIMIT", "expected at most"),
    ("frame", "arena_not_memfd",
     frames_case([(frame({"op": "acquire", "id": 2, "tag": "victim", "nfds": 1}), 1)]),
     "MS_E_PROTOCOL", "the arena descriptor is not usable"),
    # a python constructor in a memfd beside the request (ctorfd.h)
    ("frame", "ctor_unsealed", ctor_load([("memfd", 100, 0)]), "MS_E_SPEC",
     "load: the constructor memfd: expected it sealed against write, shrink and grow"),
    ("frame", "ctor_writable", ctor_load([("memfd", 100, SEALED & ~fcntl.F_SEAL_WRITE)]),
     "MS_E_SPEC", "got seals 0x7"),
    ("frame", "ctor_wrong_size", ctor_load([("memfd", 99, SEALED)]), "MS_E_SPEC",
     "expected 100 bytes (python.constructor_size), got 99"),
    ("frame", "ctor_not_memfd", ctor_load([("null",)]), "MS_E_SPEC",
     "the constructor descriptor: expected a memfd (a regular file)"),
    ("frame", "ctor_missing", ctor_load([]), "MS_E_SPEC",
     "expected that memfd with the request, got none"),
    ("frame", "ctor_unasked", ctor_load([("memfd", 100, SEALED)], python=PY_OK),
     "MS_E_SPEC", "got a constructor memfd, but the spec has no python.constructor_size"),
    ("frame", "ctor_two", ctor_load([("memfd", 100, SEALED), ("memfd", 100, SEALED)]),
     "MS_E_PROTOCOL", "load: expected at most 1 descriptor(s) (the constructor memfd), got 2"),
    ("frame", "acquire_ctor_unsealed",
     ctor_load([("null",), ("memfd", 100, 0)], op="acquire"), "MS_E_SPEC",
     "acquire: the constructor memfd: expected it sealed"),
    ("frame", "acquire_three_fds", ctor_load([("null",)] * 3, op="acquire"),
     "MS_E_PROTOCOL", "acquire: expected at most 2 descriptor(s) (the arena memfd, then the "
     "constructor memfd), got 3"),
    # specs
    ("spec", "not_json", session_case("s1", "{backend: dense"), "MS_E_SPEC", "invalid JSON"),
    ("spec", "unknown_field", session_case("s2", {"backend": "identity", "weigths": "x"}),
     "MS_E_SPEC", "unknown spec field \"weigths\" (known: backend, weights"),
    ("spec", "no_backend", session_case("s3", {"max_batch": 4}), "MS_E_SPEC",
     "spec field \"backend\": expected \"dense\", \"python\" or \"identity\", got nothing"),
    ("spec", "wrong_type", session_case("s4", {"backend": "identity", "max_batch": "ten"}),
     "MS_E_SPEC", "spec field \"max_batch\": expected an integer from 1 to 65536, got \"ten\""),
    ("spec", "out_of_range", session_case("s5", {"backend": "identity", "instances": 65}),
     "MS_E_SPEC", "spec field \"instances\": expected an integer from 1 to 64, got 65"),
    ("spec", "device", session_case("s6", {"backend": "identity", "device": "cuda:64"}),
     "MS_E_SPEC", "expected \"cpu\" or \"cuda:N\" with N from 0 to 63"),
    ("spec", "dense_without_weights", session_case("s7", {"backend": "dense"}), "MS_E_SPEC",
     "expected the path of a safetensors file"),
    ("spec", "python_not_object", session_case("s8", {"backend": "python", "python": []}),
     "MS_E_SPEC", "spec field \"python\": expected an object with constructor"),
    ("spec", "python_constructor", session_case(
        "s9", {"backend": "python", "python": dict(PY_OK, constructor="not base64!")}),
     "MS_E_SPEC", "spec field \"python.constructor\": expected the base64 text"),
    ("spec", "python_relative_executable", session_case(
        "s10", {"backend": "python", "python": dict(PY_OK, executable="python3")}),
     "MS_E_SPEC", "spec field \"python.executable\": expected the absolute path"),
    ("spec", "python_constructor_size", session_case(
        "s15", {"backend": "python", "python": dict(PY_MEMFD, constructor_size=(1 << 30) + 1)}),
     "MS_E_SPEC", "spec field \"python.constructor_size\": expected the size in bytes"),
    ("spec", "python_constructor_both", session_case(
        "s16", {"backend": "python", "python": dict(PY_MEMFD, constructor="gASV")}),
     "MS_E_SPEC", "spec field \"python.constructor\": expected null beside constructor_size"),
    ("spec", "python_key", session_case(
        "s11", {"backend": "python", "python": dict(PY_OK, key="ABC")}),
     "MS_E_SPEC", "spec field \"python.key\": expected null or a SHA-256"),
    ("spec", "python_identity", session_case(
        "s12", {"backend": "python", "python": dict(PY_OK, identity={"a": 5})}),
     "MS_E_SPEC", "spec field \"python.identity\": expected null or an object of at most 32"),
    ("spec", "python_unknown_field", session_case(
        "s13", {"backend": "python", "python": dict(PY_OK, pickle="x")}),
     "MS_E_SPEC", "unknown spec field \"python.pickle\""),
    ("spec", "python_with_dense", session_case(
        "s14", {"backend": "identity", "python": PY_OK}),
     "MS_E_SPEC", "expected only with backend \"python\""),
    ("spec", "conflict", session_case("victim", {"backend": "identity"}), "MS_E_SPEC_CONFLICT",
     "backend: loaded \"dense\", asked \"identity\""),
    # tags
    ("tag", "empty", session_case("", {"backend": "identity"}), "MS_E_INVAL",
     "tag: expected 1 to 128 characters of [A-Za-z0-9._:/@+-], got \"\""),
    ("tag", "too_long", session_case(LONG_TAG, {"backend": "identity"}), "MS_E_INVAL",
     "tag: expected 1 to 128 characters"),
    ("tag", "bad_characters", session_case("bad tag!", {"backend": "identity"}), "MS_E_INVAL",
     "characters of [A-Za-z0-9._:/@+-]"),
    # the same tags straight to the daemon (the library checks them first)
    ("tag", "daemon_empty", frames_case([(frame({"op": "load", "id": 2, "tag": "",
                                                  "spec": {"backend": "identity"}}), 0)]),
     "MS_E_INVAL", "load: expected a tag of 1 to 128 characters of [A-Za-z0-9._:/@+-], got \"\""),
    ("tag", "daemon_too_long", frames_case([(frame({"op": "load", "id": 2, "tag": LONG_TAG,
                                                     "spec": {"backend": "identity"}}), 0)]),
     "MS_E_INVAL", "load: expected a tag of 1 to 128 characters"),
    ("tag", "daemon_bad_characters",
     frames_case([(frame({"op": "load", "id": 2, "tag": "a\nb",
                          "spec": {"backend": "identity"}}), 0)]),
     "MS_E_INVAL",
     "load: expected a tag of 1 to 128 characters of [A-Za-z0-9._:/@+-], got \"a\nb\""),
    ("tag", "daemon_unload_bad", frames_case([(frame({"op": "unload", "id": 2, "tag": "x y"}),
                                               0)]),
     "MS_E_INVAL", "unload: expected a tag of 1 to 128 characters"),
    ("tag", "unknown_without_spec", session_case("nobody", None), "MS_E_UNKNOWN_TAG",
     "no model with tag \"nobody\" is loaded"),
    # weights files
    ("weights", "missing", weights_case(w_missing), "MS_E_WEIGHTS", "w-w_missing.safetensors"),
    ("weights", "truncated", weights_case(w_truncated), "MS_E_WEIGHTS", "safetensors"),
    ("weights", "bad_header", weights_case(w_bad_header), "MS_E_WEIGHTS", "JSON"),
    ("weights", "header_too_long", weights_case(w_header_too_long), "MS_E_WEIGHTS", "header"),
    ("weights", "wrong_dtype", weights_case(w_wrong_dtype), "MS_E_WEIGHTS",
     "expected dtype F32, F16 or BF16, got int32"),
    ("weights", "shapes_do_not_chain", weights_case(w_no_chain), "MS_E_WEIGHTS", "9"),
    ("weights", "no_layers", weights_case(w_no_layers), "MS_E_WEIGHTS", "weight"),
    # .npy inputs (the test client and `modelshare infer`)
    ("npy", "bad_magic", infer_case(NPY["bad_magic"]), "MS_E_INVAL", "magic"),
    ("npy", "bad_header", infer_case(NPY["bad_header"]), "MS_E_INVAL", "fortran_order"),
    ("npy", "truncated", infer_case(NPY["truncated"]), "MS_E_IO",
     "is truncated: expected 48 bytes of data after the header, the file has 20"),
    ("npy", "fortran_order", infer_case(NPY["fortran"]), "MS_E_INVAL", "C order"),
    ("npy", "big_endian", infer_case(NPY["big_endian"]), "MS_E_DTYPE", ">f4"),
    ("npy", "object_dtype", infer_case(NPY["object_dtype"]), "MS_E_DTYPE", "|O"),
    # shapes, dtypes, sizes (well-formed .npy files the model cannot take)
    ("shape", "width", infer_case(lambda w: np.ones((2, WIDTH + 1), np.float32)), "MS_E_SHAPE",
     str(WIDTH)),
    ("shape", "rank_1", infer_case(lambda w: np.ones((WIDTH,), np.float32)), "MS_E_SHAPE",
     "expected [N, 6] (float32), got [6]"),
    ("shape", "rank_3", infer_case(lambda w: np.ones((2, 2, WIDTH), np.float32)), "MS_E_SHAPE",
     "expected [N, 6] (float32), got [2, 2, 6]"),
    ("dtype", "float64", infer_case(lambda w: np.ones((2, WIDTH), np.float64)), "MS_E_DTYPE",
     "float32"),
    ("dtype", "int32", infer_case(lambda w: np.ones((2, WIDTH), np.int32)), "MS_E_DTYPE",
     "int32"),
    ("size", "over_the_arena",
     arena_case(lambda w: np.zeros((400000, WIDTH), np.float32), "8MiB"), "MS_E_TOO_LARGE",
     "arena"),
    # method calls: a pickle sent to a backend without methods
    ("pickle", "call_on_dense", call_case, "MS_E_INVAL", "the dense backend has no methods"),
]
RING = [
    ("garbage", "MS_E_PROTOCOL", "expected request magic"),
    ("flags", "MS_E_PROTOCOL", "expected request flags 0 or"),
    ("call_not_bytes", "MS_E_PROTOCOL", "a method call: expected a uint8 input of rank 1"),
    ("multi_not_manifest", "MS_E_PROTOCOL", "several tensors: expected a uint8 manifest"),
    ("multi_dense", "MS_E_INVAL", "the dense backend takes one tensor and gives one"),
    ("dtype_unknown", "MS_E_DTYPE", "expected an input dtype from 1 to 10"),
    ("rank_9", "MS_E_SHAPE", "expected a rank from 0 to 8"),
    ("unused_dim", "MS_E_PROTOCOL", "expected 0 in unused dimension 5"),
    ("shape_huge", "MS_E_TOO_LARGE", "overflows the byte size"),
    ("shape_negative", "MS_E_SHAPE", "expected every dimension >= 0"),
    ("in_len_wrong", "MS_E_PROTOCOL", "expected an input of 24 bytes"),
    ("in_len_over_arena", "MS_E_TOO_LARGE", "expected at most the arena's"),
    ("in_in_header", "MS_E_PROTOCOL", "input [0, +24): expected a range inside the arena"),
    ("in_in_rings", "MS_E_PROTOCOL", "input [4096, +24): expected a range inside"),
    ("in_past_end", "MS_E_PROTOCOL", "expected a range inside the arena's tensor space"),
    ("in_off_wraps", "MS_E_PROTOCOL", "expected a range inside the arena's tensor space"),
    ("out_in_header", "MS_E_PROTOCOL", "output room [64, +1048576): expected a range inside"),
    ("out_at_end", "MS_E_PROTOCOL", "output room"),
    ("out_off_wraps", "MS_E_PROTOCOL", "output room"),
    ("overlap", "MS_E_PROTOCOL", "not to overlap"),
    ("misaligned", "MS_E_PROTOCOL", "expected an offset aligned to 4 bytes"),
    ("deadline_negative", "MS_E_PROTOCOL", "expected a deadline >= 0"),
    ("width_wrong", "MS_E_SHAPE", str(WIDTH)),
    ("dtype_wrong", "MS_E_DTYPE", "float32"),
    ("out_room_small", "MS_E_TOO_LARGE", ""),
    ("slot_out_of_range", "none", "skipped"),
    ("tail_runaway", "MS_E_PROTOCOL", "expected at most 64 requests in flight"),
    # the input's arena (records.h in_arena): the own one, or one linked (a pipeline)
    ("arena_index_huge", "MS_E_PROTOCOL", "input arena 9: expected 0 (the lease's own) to 8"),
    ("arena_not_linked", "MS_E_PROTOCOL", "input arena 3: expected an arena linked to this"),
    ("arena_reserved", "MS_E_PROTOCOL", "expected 0 in the reserved field"),
    ("linked_past_end", "MS_E_PROTOCOL", "expected a range inside the arena's tensor space"),
    ("linked_wrong_lease", "MS_E_PROTOCOL", "input arena 1: expected the arena of lease 999999"),
    ("linked_own_with_link", "MS_E_PROTOCOL", "expected in_link 0"),
    ("linked_ok", "OK", ""),
    ("linked_same_offsets", "OK", ""),
]
CASES += [("ring", name, ring_case(name), code, text) for name, code, text in RING]


@pytest.mark.parametrize("boundary,case,how,code,text", CASES,
                         ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_bad_input(world, boundary, case, how, code, text):
    got_code, got_msg = how(world)
    RESULTS.append((boundary, case, code, text, got_code, got_msg))
    assert got_code == code, f"{boundary}/{case}: expected {code}, got {got_code} {got_msg}"
    assert text in got_msg, f"{boundary}/{case}: expected {text!r} in the message {got_msg!r}"
    world.check_alive()


def test_print_the_table(world, capsys):
    """Prints what each case got (run after the catalogue)."""
    assert len(CASES) >= 30
    with capsys.disabled():
        print(f"\nbad input catalogue: {len(RESULTS)} of {len(CASES)} cases ran")
        print(f"{'boundary':8} {'case':28} {'code':18} message")
        for boundary, case, code, text, got_code, got_msg in RESULTS:
            mark = "" if got_code == code and text in got_msg else "  <-- expected " + code
            print(f"{boundary:8} {case:28} {got_code:18} {got_msg[:90]}{mark}")
    world.check_alive()
