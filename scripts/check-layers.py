#!/usr/bin/env python3
"""Fails when the files of a folder include each other, or call each other, in a circle.

A file's unit is its name without .c/.h and without an "_int" suffix (models.c, models.h and
models_int.h, the layer's internals, are one unit). Two graphs are checked per folder:

- includes: unit A depends on unit B when a file of A includes B's header from the same folder;
- calls (with --calls BUILD, for the folders in CALL_FOLDERS): unit A depends on unit B when
  A's object file (found under BUILD, as the compiler made it) uses a symbol that B's object file
  defines. `nm` gives both: what each .o defines and what it leaves undefined.

A circle among units means the layers of docs/ARCHITECTURE.md are broken: a lower layer reaching
up. A call circle that is known and kept is listed in CALL_EXCEPTIONS with its reason.

    scripts/check-layers.py [--calls build] src/daemon src/lib src/worker
"""
import pathlib
import re
import subprocess
import sys

# The folders whose calls between files must go one way.
CALL_FOLDERS = {"src/daemon", "src/lib", "src/worker"}

# Call circles kept on purpose: frozenset of the units in the circle -> why.
CALL_EXCEPTIONS = {}

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


def objects(build, folder):
    """{unit: [object files]} of folder's .c files, as compiled under build (any target)."""
    objs = {}
    sources = {f.name for f in folder.glob("*.c")}
    for o in sorted((build / folder).glob("CMakeFiles/*.dir/**/*.c.o")):
        src = o.name[:-len(".o")]
        if src in sources:
            objs.setdefault(unit_of(src[:-len(".c")]), []).append(o)
    return objs


def symbols(obj):
    """(defined, undefined) global symbols of one object file."""
    out = subprocess.run(["nm", "-g", str(obj)], check=True, capture_output=True, text=True)
    defined, undefined = set(), set()
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "U":
            undefined.add(parts[1])
        elif len(parts) == 3 and parts[1] not in "Uuvw":
            defined.add(parts[2])
    return defined, undefined


def call_graph(build, folder):
    """Calls (and data references) between the units of folder, from their object files; None
    when folder has no object files under build."""
    objs = objects(build, folder)
    if not objs:
        return None
    defs, uses = {}, {}
    for unit, files in objs.items():
        for o in files:
            d, u = symbols(o)
            for sym in d:
                defs.setdefault(sym, unit)
            uses.setdefault(unit, set()).update(u)
    deps = {}
    for unit, used in uses.items():
        deps[unit] = {defs[s] for s in used if s in defs and defs[s] != unit}
    return deps


def call_circle(deps):
    """A call circle that is not a listed exception, or None. Excepted circles' edges are
    dropped one circle at a time until none is left or one is not excepted."""
    deps = {u: set(v) for u, v in deps.items()}
    while True:
        found = circle(deps)
        if not found:
            return None
        key = frozenset(found)
        if key not in CALL_EXCEPTIONS:
            return found
        deps[found[-2]].discard(found[-1])


def main(args):
    build = None
    if args[:1] == ["--calls"]:
        build, args = pathlib.Path(args[1]), args[2:]
    bad = 0
    for name in args or ["src/daemon", "src/lib", "src/worker"]:
        found = circle(graph(pathlib.Path(name)))
        if found:
            print(f"{name}: files include each other in a circle: {' -> '.join(found)}")
            bad = 1
        if build is None or name.rstrip("/") not in CALL_FOLDERS:
            continue
        deps = call_graph(build, pathlib.Path(name.rstrip("/")))
        if deps is None:
            print(f"{name}: no object files under {build}/{name}: build first (make build)")
            bad = 1
            continue
        found = call_circle(deps)
        if found:
            print(f"{name}: files call each other in a circle: {' -> '.join(found)}")
            bad = 1
    return bad


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
