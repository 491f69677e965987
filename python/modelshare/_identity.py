"""What a constructor is, the same in every process that writes it.

Two processes that write ``Shared(lambda: Dense(256, 256), tag="m")`` pickle different bytes (the
main script's classes pickle by value in one, by reference in a spawn child; cloudpickle marks
classes with a per-process id), so the pickle cannot say whether they mean the same model. The
fingerprint here can: a SHA-256 over what the constructor is made of --

- a function: its qualified name and module (``__main__`` and ``__mp_main__`` are one), its code
  (bytecode, constants, names; not the file or line numbers), defaults, closure values and the
  globals its code names, each value fingerprinted in turn;
- a class: the name of an importable one, else its name, bases and body;
- ``functools.partial``: its function and arguments; a bound method: its function and object;
- any other object: its class and the state it pickles (``__reduce_ex__``); arrays by content.

It comes with an *outline*, one short text per top-level part ("closure.path": "'/data/a.st'"),
that the daemon quotes when two constructors under one tag differ. A walk is limited to
NODES_MAX objects; past that, or for an object that cannot be taken apart, the pickle's own hash
is the identity and ``key=`` lets the user name it.
"""
import functools
import hashlib
import sys
import types

NODES_MAX = 100000
PARTS_MAX = 24        # the daemon takes at most 32 parts of at most 200 bytes each
TEXT_MAX = 120
_MAIN = ("__main__", "__mp_main__")
_SCALARS = (type(None), bool, int, float, complex, str, bytes)


class TooLarge(Exception):
    """The walk met more than NODES_MAX objects."""


def _h(*fields):
    h = hashlib.sha256()
    for f in fields:
        b = f if isinstance(f, bytes) else str(f).encode("utf-8", "surrogatepass")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.digest()


def _module_name(obj):
    m = getattr(obj, "__module__", None)
    return "__main__" if m in _MAIN else m


def _by_reference(obj):
    """Whether obj (a function or class) is pickled by reference: found under its module and
    qualified name in an importable module (not the main script)."""
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if module in _MAIN or not isinstance(qualname, str) or "<" in qualname:
        return False
    mod = sys.modules.get(module)
    if mod is None:
        return False
    try:
        import cloudpickle
        if module in cloudpickle.list_registry_pickle_by_value():
            return False
    except (ImportError, AttributeError):  # pragma: no cover - older cloudpickle
        pass
    target = mod
    try:
        for part in qualname.split("."):
            target = getattr(target, part)
    except AttributeError:
        return False
    return target is obj


def _names(code):
    """The global names a code object and the code nested in it use."""
    out = set(code.co_names)
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            out |= _names(c)
    return out


class _Walker:
    def __init__(self):
        self.nodes = 0
        self.memo = {}      # id -> (object, digest): holding the object keeps its id unique
        self.active = {}    # id -> qualified name: an object being walked (cycles)

    def fp(self, obj):
        key = id(obj)
        if key in self.memo:
            return self.memo[key][1]
        if key in self.active:
            return _h("cycle", self.active[key])
        self.nodes += 1
        if self.nodes > NODES_MAX:
            raise TooLarge(f"more than {NODES_MAX} objects")
        self.active[key] = getattr(obj, "__qualname__", type(obj).__qualname__)
        try:
            digest = self._fp(obj)
        finally:
            del self.active[key]
        self.memo[key] = (obj, digest)
        return digest

    def _fp(self, obj):
        t = type(obj)
        if t in _SCALARS:
            return _h(t.__name__, obj if t is bytes else repr(obj))
        if t in (tuple, list):
            return _h(t.__name__, *(self.fp(x) for x in obj))
        if t in (set, frozenset):
            return _h(t.__name__, *sorted(self.fp(x) for x in obj))
        if t is dict:
            return _h("dict", *sorted(_h(self.fp(k), self.fp(v)) for k, v in obj.items()))
        if isinstance(obj, types.ModuleType):
            return _h("module", obj.__name__)
        if isinstance(obj, types.CodeType):
            return self._code(obj)
        if isinstance(obj, types.FunctionType):
            return self._function(obj)
        if isinstance(obj, type):
            return self._class(obj)
        if isinstance(obj, types.MethodType):
            return _h("method", self.fp(obj.__func__), self.fp(obj.__self__))
        if isinstance(obj, functools.partial):
            return _h("partial", self.fp(obj.func), self.fp(obj.args), self.fp(obj.keywords))
        if isinstance(obj, (staticmethod, classmethod)):
            return _h(t.__name__, self.fp(obj.__func__))
        if isinstance(obj, property):
            return _h("property", self.fp(obj.fget), self.fp(obj.fset), self.fp(obj.fdel))
        if isinstance(obj, (types.BuiltinFunctionType, types.WrapperDescriptorType,
                            types.MethodDescriptorType, types.MethodWrapperType)):
            owner = getattr(obj, "__self__", None)
            return _h("builtin", getattr(obj, "__module__", None), obj.__qualname__,
                      b"" if owner is None or isinstance(owner, types.ModuleType)
                      else self.fp(owner))
        if t.__module__ == "numpy" and t.__name__ == "ndarray":
            return _h("ndarray", obj.dtype.str, obj.shape,
                      hashlib.sha256(obj.tobytes() if not obj.dtype.hasobject else
                                     b"".join(self.fp(x) for x in obj.ravel())).digest())
        return self._object(obj)

    def _code(self, code):
        return _h("code", code.co_argcount, code.co_posonlyargcount, code.co_kwonlyargcount,
                  code.co_flags, code.co_code, code.co_names, code.co_varnames,
                  code.co_freevars, code.co_cellvars, *(self.fp(c) for c in code.co_consts))

    def _function(self, fn):
        if _by_reference(fn):
            return _h("ref", fn.__module__, fn.__qualname__)
        return _h("function", _module_name(fn), fn.__qualname__,
                  *(d for _, d in self.function_parts(fn)))

    def function_parts(self, fn):
        """(part name, digest) for what a function by value is made of."""
        parts = [("code", self.fp(fn.__code__))]
        if fn.__defaults__:
            parts.append(("defaults", self.fp(fn.__defaults__)))
        if fn.__kwdefaults__:
            parts.append(("kwdefaults", self.fp(fn.__kwdefaults__)))
        for name, cell in zip(fn.__code__.co_freevars, fn.__closure__ or ()):
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell
                parts.append((f"closure.{name}", _h("empty")))
                continue
            parts.append((f"closure.{name}", self.fp(value)))
        g = fn.__globals__
        for name in sorted(_names(fn.__code__)):
            # A module's own dunders (__name__ is __mp_main__ in a spawn child) say where the
            # code runs, not what it does; an attribute lookup x.__name__ names one too.
            if name in g and not (name.startswith("__") and name.endswith("__")):
                parts.append((f"global.{name}", self.fp(g[name])))
        return parts

    def _class(self, cls):
        if _by_reference(cls):
            return _h("ref", cls.__module__, cls.__qualname__)
        body = []
        for name, value in sorted(cls.__dict__.items()):
            if name in ("__dict__", "__weakref__", "__module__", "__qualname__") or \
                    name.startswith("_abc_"):
                continue
            body.append(_h(name, self.fp(value)))
        return _h("class", _module_name(cls), cls.__qualname__,
                  *(self.fp(b) for b in cls.__bases__), *body)

    def _object(self, obj):
        try:
            rv = obj.__reduce_ex__(4)
        except Exception:  # an object that does not pickle: its class alone
            return _h("opaque", self.fp(type(obj)))
        if isinstance(rv, str):  # a global, by name
            return _h("global", _module_name(obj), rv)
        rv = list(rv) + [None] * (6 - len(rv))
        for i in (3, 4):  # list and dict items come as iterators
            if rv[i] is not None:
                rv[i] = list(rv[i])
        return _h("object", self.fp(type(obj)), *(self.fp(x) for x in rv[:5]))


def _text(obj, digest):
    """A short text for a part, the same in every process for the same digest."""
    if type(obj) in _SCALARS or (type(obj) in (tuple, list) and
                                 all(type(x) in _SCALARS for x in obj)):
        r = repr(obj)
        if len(r) <= TEXT_MAX:
            return r
        return f"{r[:TEXT_MAX - 24]}... [{digest.hex()[:12]}]"
    if isinstance(obj, types.ModuleType):
        return f"module {obj.__name__}"[:TEXT_MAX]
    if isinstance(obj, type):
        what = f"class {_module_name(obj)}.{obj.__qualname__}"
    elif isinstance(obj, types.FunctionType):
        what = f"function {_module_name(obj)}.{obj.__qualname__}"
    else:
        what = f"{type(obj).__qualname__} object"
    return f"{what[:TEXT_MAX - 16]} [{digest.hex()[:12]}]"


def _describe(c):
    """What the constructor is, in words: "lambda", "function pkg.make", "class __main__.Dense"."""
    if isinstance(c, functools.partial):
        return f"functools.partial of {_describe(c.func)}"
    if isinstance(c, types.MethodType):
        return f"bound method {type(c.__self__).__qualname__}.{c.__func__.__name__}"
    if isinstance(c, types.FunctionType):
        if c.__name__ == "<lambda>":
            return f"lambda in {_module_name(c)}.{c.__qualname__}"
        return f"function {_module_name(c)}.{c.__qualname__}"
    if isinstance(c, type):
        return f"class {_module_name(c)}.{c.__qualname__}"
    return f"{type(c).__qualname__} object (of {_module_name(type(c))})"


def _parts(w, c, prefix=""):
    """(name, object or None, digest) for the top-level parts of constructor c."""
    if isinstance(c, functools.partial):
        out = _parts(w, c.func, prefix + "func.")
        out += [(f"{prefix}args[{i}]", a, w.fp(a)) for i, a in enumerate(c.args)]
        out += [(f"{prefix}kwargs.{k}", v, w.fp(v)) for k, v in sorted(c.keywords.items())]
        return out
    if isinstance(c, types.MethodType):
        return _parts(w, c.__func__, prefix) + _state_parts(w, c.__self__, prefix + "self")
    if isinstance(c, types.FunctionType) and not _by_reference(c):
        return [(f"{prefix}{name}", _part_object(c, name), d)
                for name, d in w.function_parts(c)]
    if isinstance(c, (types.FunctionType, type)):
        return [(f"{prefix}body", c, w.fp(c))] if not _by_reference(c) else []
    return _state_parts(w, c, prefix + "object")


def _part_object(fn, name):
    """The object behind a function part, for its text (None: the digest alone)."""
    if name in ("defaults", "kwdefaults"):
        return getattr(fn, f"__{name}__")
    if name.startswith("closure."):
        i = fn.__code__.co_freevars.index(name[len("closure."):])
        try:
            return fn.__closure__[i].cell_contents
        except ValueError:
            return None
    if name.startswith("global."):
        return fn.__globals__.get(name[len("global."):])
    return None


def _state_parts(w, obj, prefix):
    """An object's class and, for one with a __dict__, each attribute as a part of its own."""
    out = [(f"{prefix}.class", type(obj), w.fp(type(obj)))]
    state = getattr(obj, "__dict__", None)
    t = type(obj)
    plain = t.__reduce_ex__ is object.__reduce_ex__ and t.__reduce__ is object.__reduce__ and \
        getattr(t, "__getstate__", None) is getattr(object, "__getstate__", None)
    if isinstance(state, dict) and plain:
        out += [(f"{prefix}.{k}", v, w.fp(v)) for k, v in sorted(state.items())]
    else:
        out.append((f"{prefix}.state", None, w.fp(obj)))
    return out


def _finish(parts):
    """(key, outline) from (name, text, digest) parts: the key covers every part; the outline
    shows PARTS_MAX of them and folds the rest into "more"."""
    key = _h("modelshare-identity-1", *(_h(n, d) for n, _, d in parts)).hex()
    outline = {n[:64]: t[:200] for n, t, _ in parts[:PARTS_MAX]}
    rest = parts[PARTS_MAX:]
    if rest:
        d = _h(*(_h(n, dg) for n, _, dg in rest))
        outline["more"] = f"{len(rest)} more parts [{d.hex()[:12]}]"
    return key, outline


def of(constructor, pickle_bytes):
    """(key, outline) of a constructor; its pickle is the identity when it cannot be walked."""
    what = _describe(constructor)
    w = _Walker()
    try:
        parts = [("constructor", what, _h("constructor", what))]
        parts += [(n, _text(o, d) if o is not None else f"[{d.hex()[:12]}]", d)
                  for n, o, d in _parts(w, constructor)]
    except (TooLarge, RecursionError) as e:
        d = hashlib.sha256(pickle_bytes).digest()
        parts = [("constructor", what, _h("constructor", what)),
                 ("pickle", f"{len(pickle_bytes)} bytes [{d.hex()[:12]}] (the constructor is too "
                  f"large to fingerprint: {e}; name it with key=)", d)]
    return _finish(parts)


def stated(key):
    """(key, outline) for an identity the user names (Shared(..., key="...")."""
    return _finish([("key", repr(key)[:TEXT_MAX], _h("key", key))])
