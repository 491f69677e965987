"""The process's connection to the daemon: one per process and socket path, made on first use.

A connection is never used across fork(): the child makes its own on first use (the parent's
stays the parent's; the child does not touch it).
"""
import os
import threading

from . import _core

_lock = threading.Lock()
_current = None  # (pid, socket, _core.Client)


def client():
    """The Client of this process for $MODELSHARE_SOCKET (or the default path); connects, and
    starts the daemon when none runs, on first use."""
    global _current
    pid = os.getpid()
    socket = os.environ.get("MODELSHARE_SOCKET", "")
    cur = _current
    if cur is not None and cur[0] == pid and cur[1] == socket:
        return cur[2]
    with _lock:
        cur = _current
        if cur is not None and cur[0] == pid and cur[1] == socket:
            return cur[2]
        c = _core.Client()
        _current = (pid, socket, c)
        return c


def control(op):
    """op(client) on this process's Client. A connection to a daemon that has gone (killed,
    restarted) is replaced once: the new one starts a daemon when none runs."""
    global _current
    c = client()
    try:
        return op(c)
    except _core.DaemonLost:
        with _lock:
            if _current is not None and _current[2] is c:
                _current = None
        return op(client())


def _after_fork_in_child():
    global _lock, _current
    # Another thread may have held the lock at fork(): start afresh.
    _lock = threading.Lock()
    _current = None


os.register_at_fork(after_in_child=_after_fork_in_child)
