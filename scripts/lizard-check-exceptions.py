#!/usr/bin/env python3
"""Fails when a line of the lizard exception list names a function that is not over the limit
(fixed, renamed or gone): the list stays as short as the code allows.

usage: lizard-check-exceptions.py LIST CCN LIZARD-ARGS... (lizard's own arguments, e.g. src)"""
import subprocess
import sys


def main():
    listed, ccn, args = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    wanted = set()
    with open(listed) as f:
        for line in f:
            entry = line.split("#")[0].strip()
            if entry:
                wanted.add(entry)
    out = subprocess.run([sys.executable, "-m", "lizard", "--CCN", str(ccn), "--length", "100000",
                          "--warnings_only", *args], capture_output=True, text=True).stdout
    over = set()
    for line in out.splitlines():
        # "src/x.c:12: warning: name has 30 NLOC, 20 CCN, ..."
        parts = line.split(": warning: ")
        if len(parts) == 2:
            over.add(parts[0].rsplit(":", 1)[0] + ":" + parts[1].split(" has ")[0])
    stale = sorted(wanted - over)
    for entry in stale:
        print(f"{listed}: {entry} is not over CCN {ccn} any more: take it off the list")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
