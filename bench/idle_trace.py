"""Where the time of a call from idle goes: reads the "TR ..." lines that a build with
bench/idle-trace.patch applied prints on stderr when MS_TRACE is set, and prints medians and 90th
percentiles (us) of each step.

    git apply bench/idle-trace.patch && make build
    MS_TRACE=1 build/modelshare bench ident --spec '{"backend": "identity"}' \
        --requests 1000 --gap-us 2000 2> /tmp/tr.txt
    python3 bench/idle_trace.py /tmp/tr.txt 1000     # the last 1000 lines: the timed requests
    git apply -R bench/idle-trace.patch

Fields (CLOCK_MONOTONIC ns, both processes): client before ringing (pub0) and after (pub1),
worker back from its futex wait (0 when it was awake), batch taken, run started, completed
(slot.done_ns), client went to sleep on the slot (0: it only spun) and woke, client saw done,
ms_infer entry and exit, worker CPU, client CPU.
"""

import sys
import statistics as st

rows = []
for line in open(sys.argv[1]):
    if not line.startswith("TR "):
        continue
    v = [int(x) for x in line.split()[1:]]
    rows.append(v)
rows = rows[-int(sys.argv[2]) :] if len(sys.argv) > 2 else rows


def med(xs):
    xs = [x for x in xs if x is not None]
    return (
        (round(st.median(xs) / 1000, 1), round(sorted(xs)[int(len(xs) * 0.9)] / 1000, 1), len(xs))
        if xs
        else None
    )


print(
    "n",
    len(rows),
    "worker slept (woke!=0):",
    sum(1 for r in rows if r[2]),
    "client futex-slept:",
    sum(1 for r in rows if r[6]),
)
print("publish (ring+wake syscall)", med([r[1] - r[0] for r in rows]))
print("pub0->worker woke", med([r[2] - r[0] for r in rows if r[2]]))
print("pub1->worker woke", med([r[2] - r[1] for r in rows if r[2]]))
print("woke->take", med([r[3] - r[2] for r in rows if r[2]]))
print("pub0->run0", med([r[4] - r[0] for r in rows]))
print("run0->done", med([r[5] - r[4] for r in rows]))
print("done->client seen", med([r[8] - r[5] for r in rows]))
print("done->seen (client spun)", med([r[8] - r[5] for r in rows if not r[6]]))
print("done->seen (client slept)", med([r[8] - r[5] for r in rows if r[6]]))
print("pub0->seen total", med([r[8] - r[0] for r in rows]))
print("request entry->pub0", med([r[0] - r[9] for r in rows]))
print("seen->request exit", med([r[10] - r[8] for r in rows]))
print("request entry->exit", med([r[10] - r[9] for r in rows]))
same = [r for r in rows if r[11] == r[12]]
print(
    "same cpu at done/exit:",
    len(same),
    "done->seen same",
    med([r[8] - r[5] for r in same]),
    "diff",
    med([r[8] - r[5] for r in rows if r[11] != r[12]]),
)
print(
    "total same",
    med([r[10] - r[9] for r in same]),
    "diff",
    med([r[10] - r[9] for r in rows if r[11] != r[12]]),
)
