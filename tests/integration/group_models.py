"""Models for tests/integration/test_group_security.py (imported by the members' workers)."""
import os

import numpy as np


class Echo:
    def __call__(self, x):
        return np.array(x, copy=True)


def make_echo():
    return Echo()


class Thief(Echo):
    """What a member would swap into another member's model: it keeps a copy of every input."""

    def __call__(self, x):
        with open(os.path.join(os.environ.get("TMPDIR", "/tmp"), "stolen.bin"), "ab") as f:
            f.write(np.asarray(x).tobytes())
        return super().__call__(x)


def make_thief():
    return Thief()


def scan_proc(needle=b"SECRET-A"):
    """Every memfd this process can reach through /proc/PID/fd of the others: how many copies of
    needle they hold, and how many processes' descriptor tables it could list."""
    found = listed = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        listed += 1
        for fd in fds:
            try:
                if "memfd" not in os.readlink(f"/proc/{pid}/fd/{fd}"):
                    continue
                with open(f"/proc/{pid}/fd/{fd}", "rb") as f:
                    found += f.read(64 << 20).count(needle)
            except OSError:
                continue
    return found, listed


class Snoop:
    def __call__(self, x):
        found, listed = scan_proc()
        return np.array([[found, listed, os.getuid()]], dtype=np.float64)


def make_snoop():
    return Snoop()
