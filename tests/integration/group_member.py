"""A member's client for tests/integration/test_group_security.py, run as that member's uid.

    group_member.py hold TAG SHARED_WITH   acquire an echo model, call it with SECRET-A bytes,
                                           print "acquired", then answer lines: "call N" (N more
                                           calls: the errors and wrong answers as JSON), EOF: exit
    group_member.py ACTION TAG             one attempt, its outcome as one JSON line:
        snoop    B's own python model looks through /proc for other processes' memfds
        acquire  acquire TAG (an echo model) and call it once
        swap     swap TAG to another constructor
        unload   unload TAG (force)
        status   the status document (TAG unused)
"""
import json
import sys

import numpy as np

import group_models
import modelshare

SECRET = np.frombuffer(b"SECRET-A" * 512, dtype=np.uint8).reshape(1, -1)


def echo(tag, shared_with="owner"):
    extra = {"shared_with": shared_with} if shared_with != "owner" else {}
    return modelshare.Shared(group_models.make_echo, tag=tag, **extra)


def outcome(fn):
    try:
        return {"ok": True, "value": fn()}
    except modelshare.Error as e:
        return {"ok": False, "error": type(e).__name__, "message": str(e)}


def calls(model, n):
    wrong = errors = 0
    for _ in range(n):
        try:
            wrong += not np.array_equal(np.asarray(model(SECRET)), SECRET)
        except modelshare.Error as e:
            errors += 1
            print(f"call failed: {type(e).__name__}: {e}", file=sys.stderr)
    return {"errors": errors, "wrong": wrong}


def hold(tag, shared_with):
    model = echo(tag, shared_with).acquire()
    first = calls(model, 1)  # A's arena now holds SECRET-A
    assert first == {"errors": 0, "wrong": 0}, first
    print("acquired", flush=True)
    for line in sys.stdin:
        print(json.dumps(calls(model, int(line.split()[1]))), flush=True)


def once(action, tag):
    def snoop():
        shared = modelshare.Shared(group_models.make_snoop, tag=tag)
        with shared.acquire() as model:
            found, listed, uid = np.asarray(model(np.zeros((1, 1), np.float32)))[0]
        return {"found": int(found), "listed": int(listed), "uid": int(uid)}

    def acquire():
        with echo(tag).acquire() as model:
            return calls(model, 1)

    def swap():
        echo(tag).swap(group_models.make_thief)

    def status():
        return modelshare.status()

    fn = {"snoop": snoop, "acquire": acquire, "swap": swap,
          "unload": lambda: modelshare.unload(tag, force=True), "status": status}[action]
    print(json.dumps(outcome(fn)), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "hold":
        hold(sys.argv[2], sys.argv[3])
    else:
        once(sys.argv[1], sys.argv[2])
