#!/usr/bin/env python3
"""Fails when the files of a folder include each other in a circle.

A file's unit is its name without .c/.h and without an "_int" suffix (models.c, models.h and
models_int.h, the layer's internals, are one unit); unit A depends on unit
B when a file of A includes B's header from the same folder. A circle among units means the
layers of docs/ARCHITECTURE.md are broken: a lower layer reaching up.

    scripts/check-layers.py src/daemon src/lib src/worker
"""
import pathlib
import re
import sys

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"/]+)\.h"', re.M)


def unit_of(stem):
    return stem[:-len("_int")] if stem.endswith("_int") else stem


def graph(folder):
    deps = {}
    for f in sorted(folder.glob("*.[ch]")):
        unit = deps.setdefault(unit_of(f.stem), set())
        for name in INCLUDE.findall(f.read_text(errors="replace")):
            if unit_of(name) != unit_of(f.stem) and (folder / f"{name}.h").exists():
                unit.add(unit_of(name))
    return deps


def circle(deps):
    """One circle as a list of units, or None."""
    state, stack = {}, []

    def visit(u):
        state[u] = "open"
        stack.append(u)
        for v in sorted(deps.get(u, ())):
            if state.get(v) == "open":
                return stack[stack.index(v):] + [v]
            if v not in state:
                found = visit(v)
                if found:
                    return found
        stack.pop()
        state[u] = "done"
        return None
    for u in sorted(deps):
        if u not in state:
            found = visit(u)
            if found:
                return found
    return None


def main(folders):
    bad = 0
    for name in folders:
        found = circle(graph(pathlib.Path(name)))
        if found:
            print(f"{name}: files include each other in a circle: {' -> '.join(found)}")
            bad = 1
    return bad


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["src/daemon", "src/lib", "src/worker"]))
