"""Nobody stalls the daemon: a client that does not read its replies, or sends half a frame and
stops, is buffered without blocking anyone and dropped (its leases released) when its reply
queue is full or its frame does not come whole in time (tests/helpers/faultclient.c)."""
import json
import socket
import struct
import subprocess
import time

from conftest import BUILD, TESTCLIENT, LineClient, wait_until

FAULTCLIENT = BUILD / "tests" / "ms-faultclient"
OUTQ_MAX = 1 << 20  # MS__CONN_OUTQ_MAX (src/daemon/conn.h)


class SlowReader(LineClient):
    """An ms-faultclient slowreader: holds a lease, sends status requests and reads the replies
    only when told."""

    def __init__(self, env, tag, spec):
        super().__init__([FAULTCLIENT, "slowreader", tag, json.dumps(spec)], env)

    def close(self):
        super().close(timeout=30)


def ping(ms, count):
    return subprocess.Popen([str(FAULTCLIENT), "ctlping", str(count)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ms.env)


def ping_result(p):
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0 and out.startswith("ok "), out + err
    return out.strip()


def test_a_client_that_does_not_read_is_queued_then_dropped(ms):
    spec = {"backend": "identity", "keep_alive": 60}
    slow = SlowReader(ms.env, "stall", spec)
    try:
        assert ms.model("stall")["leases"] == 1
        # Replies for about 700 KB: more than the socket buffers hold, less than the queue's
        # limit. The daemon queues them and goes on serving others (before the queue it waited
        # up to 1 s for this client, then dropped it).
        reply = len(json.dumps(ms.status(), separators=(",", ":")))
        n = 700_000 // reply + 1
        assert slow.command(f"send {n}") == f"sent {n}"
        quiet = ping_result(ping(ms, 200))
        print(f"\nstatus calls while {n} replies of ~{reply} bytes wait for a slow reader: {quiet}")
        m = ms.model("stall")
        assert m["leases"] == 1, "the slow reader was dropped below its queue's limit"
        # Every queued reply reaches it, in order, once it reads.
        assert slow.command("read") == f"read {n}"
        # Now it floods without reading: dropped once its queue is full, its lease released,
        # while another client's calls go on being answered.
        p = ping(ms, 2000)
        out = slow.command("flood")
        assert out.startswith("dropped after "), out
        sent = int(out.split()[-1])
        loud = ping_result(p)
        print(f"flooding client dropped after {sent} unread requests; status calls meanwhile: "
              f"{loud}")
        assert sent * reply > OUTQ_MAX
        wait_until(lambda: ms.model("stall")["leases"] == 0, timeout=10,
                   what="the flooder's lease to be released")
        assert "does not read its replies" in ms.log()
    finally:
        slow.close()


def frame(msg):
    body = json.dumps(msg).encode()
    return struct.pack("<I", len(body)) + body


def test_half_a_frame_delays_nobody_and_is_dropped_after_the_read_timeout(ms):
    timeout = 1.5
    ms.env["MODELSHARE_READ_TIMEOUT"] = str(timeout)
    # Starts the daemon with that environment.
    subprocess.run([str(TESTCLIENT), "connect"], env=ms.env, check=True, capture_output=True,
                   timeout=60)
    half = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    idle = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        for s in (half, idle):
            s.connect(str(ms.socket))
            s.sendall(frame({"op": "hello", "id": 1, "version": 4}))
            s.settimeout(30)
            (n,) = struct.unpack("<I", s.recv(4, socket.MSG_WAITALL))
            assert json.loads(s.recv(n, socket.MSG_WAITALL))["ok"]
        whole = frame({"op": "status", "id": 2})
        half.sendall(whole[: len(whole) // 2])
        t0 = time.monotonic()
        # Others are served meanwhile, at their usual pace.
        during = ping_result(ping(ms, 200))
        print(f"\nstatus calls while a client holds half a frame: {during}")
        assert time.monotonic() - t0 < timeout, "the test's pings took longer than the timeout"
        # Then the half-frame client hears why and is closed.
        (n,) = struct.unpack("<I", half.recv(4, socket.MSG_WAITALL))
        reply = json.loads(half.recv(n, socket.MSG_WAITALL))
        assert half.recv(1) == b""
        dropped = time.monotonic() - t0
        print(f"half-frame client dropped {dropped:.2f} s after its half frame "
              f"(read timeout {timeout} s)")
        assert reply["ok"] is False and reply["code"] == -20, reply  # MS_E_TIMEOUT
        assert "rest of a frame" in reply["error"], reply
        assert timeout * 0.9 <= dropped <= timeout + 3
        # A client that is merely idle (no partial frame) is not dropped.
        idle.sendall(frame({"op": "status", "id": 2}))
        (n,) = struct.unpack("<I", idle.recv(4, socket.MSG_WAITALL))
        assert json.loads(idle.recv(n, socket.MSG_WAITALL))["ok"]
    finally:
        half.close()
        idle.close()


def read_reply(s):
    (n,) = struct.unpack("<I", s.recv(4, socket.MSG_WAITALL))
    return json.loads(s.recv(n, socket.MSG_WAITALL))


def test_a_flood_of_requests_waits_its_turn_and_none_is_lost(ms):
    """The daemon serves one request of a connection a turn: 500 status requests sent at once
    by one client do not hold up another's, and every one of them is still answered, in order,
    though the flooder closed its sending side right after them."""
    subprocess.run([str(TESTCLIENT), "connect"], env=ms.env, check=True, capture_output=True,
                   timeout=60)
    flood = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        flood.connect(str(ms.socket))
        flood.settimeout(60)
        flood.sendall(frame({"op": "hello", "id": 1, "version": 4}))
        assert read_reply(flood)["ok"]
        n = 500  # their replies (about 1 KB each) stay under the queue limit (1 MiB)
        burst = b"".join(frame({"op": "status", "id": 10 + i}) for i in range(n))
        flood.sendall(burst)  # fits the socket's buffer with the replies unread so far
        flood.shutdown(socket.SHUT_WR)
        during = ping_result(ping(ms, 100))
        print(f"\nstatus calls beside a burst of {n} status requests: {during}")
        ids = [read_reply(flood)["id"] for _ in range(n)]
        assert ids == list(range(10, 10 + n))
        assert flood.recv(1) == b""  # then closed: end of stream after its last answer
    finally:
        flood.close()


def test_a_closed_client_that_never_takes_its_replies_is_dropped(ms):
    ms.env["MODELSHARE_READ_TIMEOUT"] = "1"
    subprocess.run([str(TESTCLIENT), "connect"], env=ms.env, check=True, capture_output=True,
                   timeout=60)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(str(ms.socket))
        s.sendall(frame({"op": "hello", "id": 1, "version": 4}))
        s.sendall(b"".join(frame({"op": "status", "id": 10 + i}) for i in range(400)))
        s.shutdown(socket.SHUT_WR)  # and never reads: its replies stay queued
        wait_until(lambda: "did not take its last" in ms.log(), timeout=15,
                   what="the closed client dropped")
        # Others are served as usual afterwards.
        assert ping_result(ping(ms, 20)).startswith("ok 20")
    finally:
        s.close()
