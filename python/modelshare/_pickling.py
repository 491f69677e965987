"""How constructors, calls and answers travel between processes: cloudpickle, with the main
script's code found wherever it was defined.

- Where the script runs as ``__main__`` (the main process, a fork child, ``python -c``, a Jupyter
  session), its functions and classes pickle by value, cloudpickle's way: nothing of the script
  runs again in the worker.
- In a multiprocessing spawn or forkserver child the script runs as ``__mp_main__`` and its
  names are importable there, so a function or class of it pickles as a reference to the
  script's path and qualified name (:func:`main_ref`). The worker loads the script as
  multiprocessing loads it in a spawn child -- run under the name ``__mp_main__``, with
  ``__main__`` aliased to it -- once, and takes the name from it. The script is spawn-safe, since
  the child itself ran it.
- Everything else (a function or class of an importable module) pickles by reference.
"""
import io
import os
import pickle
import runpy
import sys
import types

import cloudpickle

MP_MAIN = "__mp_main__"

# Set by the worker: only there may main_ref run a script that this process has not run.
LOAD_SCRIPTS = False
_scripts = {}  # path -> module, the scripts this process loaded for main_ref


def _lookup(module, qualname):
    obj = module
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _script_modules():
    """The modules this process runs as its main script: __main__, __mp_main__, loaded ones."""
    seen = set()
    for module in (sys.modules.get("__main__"), sys.modules.get(MP_MAIN), *_scripts.values()):
        if module is not None and id(module) not in seen:
            seen.add(id(module))
            yield module


def _file_of(module):
    f = getattr(module, "__file__", None)
    return os.path.abspath(f) if isinstance(f, str) and f else None


def _spawn_ref(obj):
    """(path, qualname, module name) for a function or class of a main script run as
    __mp_main__ (module name: of a main run with python -m, else None); None for anything else."""
    qualname = getattr(obj, "__qualname__", None)
    if getattr(obj, "__module__", None) != MP_MAIN or not isinstance(qualname, str) or \
            "<" in qualname:
        return None
    for module in _script_modules():
        path = _file_of(module)
        if path is None or getattr(module, "__name__", None) != MP_MAIN:
            continue
        try:
            if _lookup(module, qualname) is obj:
                spec = getattr(module, "__spec__", None)
                return path, qualname, getattr(spec, "name", None)
        except AttributeError:
            continue
    return None


def _load_script(path, name):
    """Runs the main script as multiprocessing runs it in a spawn child: the file at path, or
    the module name when the main was run with python -m."""
    module = types.ModuleType(MP_MAIN)
    if name:
        module.__dict__.update(runpy.run_module(name, run_name=MP_MAIN, alter_sys=True))
    else:
        module.__dict__.update(runpy.run_path(path, run_name=MP_MAIN))
    if not _scripts:
        sys.modules["__main__"] = sys.modules[MP_MAIN] = module
    _scripts[path] = module
    return module


def main_ref(path, qualname, name=None):
    """The function or class `qualname` of the main script at `path` (what a spawn child's
    pickle names; `name`: the module, for a main run with python -m). In the worker, the script
    is loaded the first time it is needed."""
    for module in _script_modules():
        if _file_of(module) == path:
            return _lookup(module, qualname)
    if not LOAD_SCRIPTS:
        raise pickle.UnpicklingError(
            f"modelshare: {qualname} is defined in the main script {path}, which this process "
            "does not run")
    return _lookup(_load_script(path, name), qualname)


class _Pickler(cloudpickle.Pickler):
    def reducer_override(self, obj):
        if isinstance(obj, (type, types.FunctionType)):
            ref = _spawn_ref(obj)
            if ref is not None:
                return main_ref, ref
        return super().reducer_override(obj)


def dumps(obj):
    """obj pickled for another process of this machine (see the module's docstring)."""
    f = io.BytesIO()
    _Pickler(f, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return f.getvalue()


loads = pickle.loads
