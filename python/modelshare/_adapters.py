"""Framework adapters of the python worker: the model a constructor returns, called in its
framework's own types.

adapt(model, framework) -> what the worker calls: the model itself (numpy in, numpy or anything
out: a plain callable) or a wrapper that

- PyTorch (framework="torch", or a returned torch.nn.Module, torch.jit.ScriptModule or
  torch.export.ExportedProgram): hands the model torch tensors made in place over the request's
  shared memory (torch.from_numpy of the worker's numpy view: no copy on the CPU; one
  host-to-device copy when the module's first parameter or buffer lives on cuda:N), runs the call
  under torch.inference_mode(), and gives back numpy arrays (.detach() when one requires grad,
  .cpu() when it is on another device, then .numpy(): a view, no copy, for a CPU tensor), in
  the structure the model returned (a tuple, list or dict of tensors);
- ONNX Runtime (a returned onnxruntime.InferenceSession, or with framework="onnxruntime"
  anything with the session's get_inputs() and run()): model(x)
  runs session.run(None, {first input name: x}); positional arguments feed the inputs in their
  order, keyword arguments by name; one output comes back as it is, several as a tuple.
- Keras (a returned keras.Model or layer, whichever its backend): hands the model its backend's
  tensors (keras.ops.convert_to_tensor: tf tensors with the TensorFlow backend) and gives back
  numpy arrays in the structure it returned; a functional model of several inputs is called
  the way Keras takes them: model(a, b) as model([a, b]), model(a=x, b=y) with its inputs'
  names (a dict for a model built on a dict of inputs, else a list in its inputs' order);
- TensorFlow (framework="tensorflow", or a returned tf.Module or tf.function): the arguments as
  tf tensors (tf.convert_to_tensor), the answer's tf.Tensors (a tensor, or a tuple, list or dict
  of them) as numpy arrays in the same structure;
- JAX (framework="jax", or a returned jax.jit function): the arguments as jax arrays
  (jnp.asarray), the answer's jax arrays as numpy arrays (np.asarray) in the same structure.

signature(model) says the model's named inputs and outputs where its framework knows them (an
ONNX Runtime session, a Keras model, a tf.function with an input_signature).

Every other attribute (model.method(...), model.attribute) is the wrapped model's. Frameworks are
detected without importing them: a framework that is not imported yet cannot have made the model.
"""
import functools
import itertools
import re
import sys
import warnings

import numpy as np

TORCH = "torch"
ONNXRUNTIME = "onnxruntime"
TENSORFLOW = "tensorflow"
JAX = "jax"


def _torch_kind(model, framework):
    """Whether model is one of torch's: its module, when it is."""
    torch = sys.modules.get("torch")
    if torch is None and framework == TORCH:
        import torch
    if torch is None:
        return None
    if framework == TORCH or isinstance(model, torch.nn.Module):
        return torch
    exported = getattr(getattr(torch, "export", None), "ExportedProgram", None)
    return torch if exported is not None and isinstance(model, exported) else None


def _is_onnx_session(model, framework):
    if framework == ONNXRUNTIME:  # a session, or a wrapper of the user's own, left as it is
        return callable(getattr(model, "get_inputs", None)) and \
            callable(getattr(model, "run", None))
    ort = sys.modules.get("onnxruntime")
    session = getattr(ort, "InferenceSession", None)
    return session is not None and isinstance(model, session)


def adapt(model, framework=None):
    """The model as the worker calls it (see the module's docstring)."""
    torch = _torch_kind(model, framework)
    if torch is not None:
        return TorchModel(torch, model)
    if _is_onnx_session(model, framework):
        return OnnxSession(model)
    keras = sys.modules.get("keras")
    if keras is not None and isinstance(model, keras.layers.Layer):
        return KerasModel(keras, model)
    tf = _tf_kind(model, framework)
    if tf is not None:
        return TensorFlowModel(tf, model)
    jax = _jax_kind(model, framework)
    if jax is not None:
        return JaxModel(jax, model)
    return model


def _tf_kind(model, framework):
    """tensorflow, when the model is one of its (a tf.Module, a tf.function) or framework says."""
    tf = sys.modules.get("tensorflow")
    if tf is None and framework == TENSORFLOW:
        import tensorflow as tf
    if tf is None:
        return None
    kinds = (tf.Module, tf.types.experimental.GenericFunction,
             tf.types.experimental.ConcreteFunction)
    return tf if framework == TENSORFLOW or isinstance(model, kinds) else None


def _jax_kind(model, framework):
    """jax, when the model is a jax.jit function or framework says."""
    jax = sys.modules.get("jax")
    if jax is None and framework == JAX:
        import jax
    if jax is None:
        return None
    wrapped = getattr(getattr(jax, "stages", None), "Wrapped", None)
    jitted = wrapped is not None and isinstance(model, wrapped)
    return jax if framework == JAX or jitted else None


class _Adapter:
    """Forwards what is not the call to the wrapped model (methods, attributes)."""

    __slots__ = ("_ms_model",)

    def __getattr__(self, name):
        if name.startswith("_ms_"):
            raise AttributeError(name)
        return getattr(self._ms_model, name)

    def __repr__(self):
        return f"<modelshare {type(self).__name__} of {self._ms_model!r:.200}>"


class TorchModel(_Adapter):
    """A torch module (or anything given framework="torch") called with torch tensors."""

    __slots__ = ("_ms_torch", "_ms_call", "_ms_device", "_ms_bfloat16")

    def __init__(self, torch, model):
        self._ms_model = model
        self._ms_torch = torch
        exported = getattr(getattr(torch, "export", None), "ExportedProgram", None)
        call = model.module() if exported is not None and isinstance(model, exported) else model
        self._ms_call = call
        device = _device_of(torch, call)
        self._ms_device = None if device is None or device.type == "cpu" else device
        self._ms_bfloat16 = _bfloat16()
        # A request's input already in shared memory (the caller's model.empty() array, another
        # model's output) reaches the worker read-only, and torch.from_numpy warns (once a
        # process) that torch has no read-only tensors. The module must not write into such an
        # input: __call__ checks its version counter and fails the call if it did (an input
        # the caller's call copied is the request's own, writable, as for a numpy model).
        # Silenced once here, not per call: catch_warnings() is not thread-safe.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable",
                                category=UserWarning)

    def __call__(self, *args, **kwargs):
        torch = self._ms_torch
        # The tensors are made before inference mode: tensors made outside it count their
        # in-place changes (_version), which is how a write into a read-only input is seen.
        if len(args) == 1 and not kwargs and type(args[0]) is np.ndarray and \
                self._ms_device is None and (self._ms_bfloat16 is None or
                                             args[0].dtype != self._ms_bfloat16):
            # The data plane's call (one array, a module on the CPU), the short way.
            x = torch.from_numpy(args[0])
            version = None if args[0].flags.writeable else x._version
            with torch.inference_mode():
                y = self._ms_call(x)
                y = _numpy_of(torch, y, self._ms_bfloat16) if type(y) is torch.Tensor else \
                    self._ms_out(y)
            if version is not None and x._version != version:
                raise _wrote_input()
            return y
        shared = []
        args = [self._ms_tensor(a, shared) for a in args]
        kwargs = {k: self._ms_tensor(v, shared) for k, v in kwargs.items()}
        with torch.inference_mode():
            y = self._ms_out(self._ms_call(*args, **kwargs))
        for t, version in shared:
            if t._version != version:
                raise _wrote_input()
        return y

    def _ms_tensor(self, a, shared):
        """A numpy array as a tensor over the same memory, moved to the model's device; a
        read-only one that stays in place goes in shared as (tensor, version)."""
        torch = self._ms_torch
        readonly = False
        if type(a) is dict:  # model({"input_ids": ..., ...}): each tensor made the same way
            return {k: self._ms_tensor(v, shared) for k, v in a.items()}
        if isinstance(a, np.ndarray):
            readonly = not a.flags.writeable
            if self._ms_bfloat16 is not None and a.dtype == self._ms_bfloat16:
                a = torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
            else:
                a = torch.from_numpy(a)
        if self._ms_device is not None and isinstance(a, torch.Tensor) and \
                a.device != self._ms_device:
            return a.to(self._ms_device)
        if readonly:
            shared.append((a, a._version))
        return a

    def _ms_out(self, y):
        """Tensors as numpy arrays, in the structure the model returned; the rest as it is."""
        torch = self._ms_torch
        if isinstance(y, torch.Tensor):
            return _numpy_of(torch, y, self._ms_bfloat16)
        if type(y) in (tuple, list):
            return type(y)(self._ms_out(v) for v in y)
        if isinstance(y, dict):  # a dict, or a mapping such as transformers' ModelOutput
            return {k: self._ms_out(v) for k, v in y.items()}
        return y


def _wrote_input():
    return ValueError(
        "the module wrote into its input (an in-place operation such as ReLU(inplace=True) or "
        "x.add_()), which is the caller's shared memory here (an input from model.empty() or "
        "another model's output, passed by reference): clone it first (x = x.clone()) or make "
        "the operation out of place")


def _numpy_of(torch, y, bfloat16):
    """A tensor as a numpy array: a view of it on the CPU, else one copy to the host."""
    if y.requires_grad:
        y = y.detach()
    if not y.is_cpu:
        y = y.cpu()
    if y.dtype == torch.bfloat16 and bfloat16 is not None:
        return y.view(torch.int16).numpy().view(bfloat16)
    if y.is_conj() or y.is_neg():
        y = y.resolve_conj().resolve_neg()
    return y.numpy()


def plain(y):
    """What a plain callable returned, with a torch tensor (one that requires grad, on a device:
    a wrapper that forgot inference mode) as a numpy array; anything else as it is. For the
    worker's slow path only: a numpy answer never comes here."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(y, torch.Tensor):
        return _numpy_of(torch, y, _bfloat16())
    return y


def _device_of(torch, module):
    """The device of the module's first parameter or buffer; None when it has neither."""
    try:
        first = next(itertools.chain(module.parameters(), module.buffers()), None)
    except (AttributeError, TypeError):  # not a module: a function given framework="torch"
        return None
    return None if first is None else first.device


def _bfloat16():
    ml_dtypes = sys.modules.get("ml_dtypes")
    return np.dtype(ml_dtypes.bfloat16) if ml_dtypes is not None else None


class OnnxSession(_Adapter):
    """An onnxruntime.InferenceSession called as model(x)."""

    __slots__ = ("_ms_inputs",)

    def __init__(self, session):
        self._ms_model = session
        self._ms_inputs = [i.name for i in session.get_inputs()]

    def __call__(self, *args, **kwargs):
        if len(args) > len(self._ms_inputs):
            raise TypeError(f"the ONNX model takes {len(self._ms_inputs)} input(s) "
                            f"({', '.join(self._ms_inputs)}), got {len(args)} positional")
        feeds = {name: _numpy(a) for name, a in zip(self._ms_inputs, args)}
        feeds.update((k, _numpy(v)) for k, v in kwargs.items())
        ys = self._ms_model.run(None, feeds)
        return ys[0] if len(ys) == 1 else tuple(ys)

    def _ms_signature(self):
        return _onnx_side(self._ms_model.get_inputs()), _onnx_side(self._ms_model.get_outputs())


def _structure(y, leaf, convert):
    """y with every leaf (leaf(v) true) converted, through tuples, lists and dicts (or mappings
    such as transformers' ModelOutput); anything else as it is."""
    if leaf(y):
        return convert(y)
    if type(y) in (tuple, list):
        return type(y)(_structure(v, leaf, convert) for v in y)
    if isinstance(y, dict):
        return {k: _structure(v, leaf, convert) for k, v in y.items()}
    return y


def _is_array(a):
    return isinstance(a, np.ndarray)


class KerasModel(_Adapter):
    """A Keras model (or layer) called with its backend's tensors; numpy arrays back."""

    __slots__ = ("_ms_ops", "_ms_names", "_ms_dict_in")

    def __init__(self, keras, model):
        self._ms_model = model
        self._ms_ops = keras.ops
        struct = getattr(model, "_inputs_struct", None)
        self._ms_dict_in = isinstance(struct, dict)
        try:
            self._ms_names = list(struct) if self._ms_dict_in else \
                [t.name for t in model.inputs]
        except (AttributeError, TypeError, ValueError):  # a layer or a model not built on inputs
            self._ms_names = None

    def __call__(self, *args, **kwargs):
        ops = self._ms_ops
        tensor = functools.partial(_structure, leaf=_is_array, convert=ops.convert_to_tensor)
        args = [tensor(a) for a in args]
        kwargs = {k: tensor(v) for k, v in kwargs.items()}
        if self._ms_names is not None and len(self._ms_names) > 1:
            args, kwargs = self._ms_functional(args, kwargs), {}
        y = self._ms_model(*args, **kwargs)
        return _structure(y, ops.is_tensor, ops.convert_to_numpy)

    def _ms_functional(self, args, kwargs):
        """A functional model's inputs as Keras takes them: one list or dict."""
        names = self._ms_names
        if kwargs and not args:
            if set(kwargs) != set(names):
                raise TypeError(f"the Keras model takes the inputs {', '.join(names)}; got "
                                f"{', '.join(kwargs)}")
            return [kwargs] if self._ms_dict_in else [[kwargs[n] for n in names]]
        if len(args) > 1 and not kwargs:
            return [dict(zip(names, args))] if self._ms_dict_in else [list(args)]
        if kwargs:
            raise TypeError("the Keras model takes its inputs by position or by name, not both")
        return args

    def _ms_signature(self):
        model = self._ms_model
        if getattr(model, "inputs", None) is None or getattr(model, "outputs", None) is None:
            return None
        ins = getattr(model, "_inputs_struct", None)
        outs = getattr(model, "_outputs_struct", None)
        return _keras_side(ins if isinstance(ins, dict) else model.inputs), \
            _keras_side(outs if isinstance(outs, dict) else model.outputs)


def _keras_side(tensors):
    """Keras tensors (a list, or a dict by name) as signature entries."""
    items = tensors.items() if isinstance(tensors, dict) else ((t.name, t) for t in tensors)
    return [{"name": name, "dtype": _dtype_name(str(t.dtype)), "shape": _dims(t.shape)}
            for name, t in items]


_DTYPE_NAMES = {"float32", "float16", "bfloat16", "float64", "int8", "uint8", "int16", "int32",
                "int64", "bool"}


def _dtype_name(name):
    """A framework's dtype name as ours ("string": a list of bytes); None when we have none."""
    if name == "string":
        return "bytes"
    return name if name in _DTYPE_NAMES else None


class TensorFlowModel(_Adapter):
    """A tf.Module, a tf.function or anything given framework="tensorflow", called with tf
    tensors; numpy arrays back."""

    __slots__ = ("_ms_tf",)

    def __init__(self, tf, model):
        self._ms_model = model
        self._ms_tf = tf

    def __call__(self, *args, **kwargs):
        tf = self._ms_tf
        tensor = functools.partial(_structure, leaf=_is_array, convert=tf.convert_to_tensor)
        y = self._ms_model(*(tensor(a) for a in args), **{k: tensor(v) for k, v in
                                                            kwargs.items()})
        return _structure(y, lambda v: isinstance(v, tf.Tensor), lambda v: v.numpy())

    def _ms_signature(self):
        specs = getattr(self._ms_model, "input_signature", None)
        if not specs or not all(isinstance(t, self._ms_tf.TensorSpec) and t.name for t in specs):
            return None
        return [{"name": t.name, "dtype": _dtype_name(t.dtype.name),
                 "shape": None if t.shape.rank is None else _dims(t.shape.as_list())}
                for t in specs], None


class JaxModel(_Adapter):
    """A jax.jit function, or anything given framework="jax", called with jax arrays; numpy
    arrays back."""

    __slots__ = ("_ms_jax",)

    def __init__(self, jax, model):
        self._ms_model = model
        self._ms_jax = jax

    def __call__(self, *args, **kwargs):
        jax = self._ms_jax
        array = functools.partial(_structure, leaf=_is_array, convert=jax.numpy.asarray)
        y = self._ms_model(*(array(a) for a in args), **{k: array(v) for k, v in
                                                          kwargs.items()})
        return _structure(y, lambda v: isinstance(v, jax.Array), np.asarray)


def _numpy(a):
    """An input for ONNX Runtime: numpy arrays as they are; tensors of other frameworks (a pickled
    call's arguments) through numpy."""
    if isinstance(a, np.ndarray) or not (hasattr(a, "__array__") or hasattr(a, "__dlpack__")):
        return a
    return np.asarray(a)


# Names ms_infer_n takes (src/common/manifest.h), and at most MS_MAX_TENSORS of them.
_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,31}")
_MAX_TENSORS = 16
_ONNX_TYPES = {"float": "float32", "float16": "float16", "bfloat16": "bfloat16",
               "double": "float64", "int8": "int8", "uint8": "uint8", "int16": "int16",
               "int32": "int32", "int64": "int64", "bool": "bool", "string": "str"}


def signature(model):
    """The model's named inputs and outputs, when its framework says them: (inputs, outputs),
    each None (not known) or a list of {"name", "dtype" (a modelshare dtype name, "str",
    "bytes", or None), "shape" (-1 for a dimension that varies; None when not known)} in the
    model's order; None otherwise (or when a name is not one ms_infer_n can send)."""
    say = getattr(type(model), "_ms_signature", None)
    sig = say(model) if say is not None else None
    if sig is None:
        return None
    for side in sig:
        if side is None:  # not known
            continue
        if len(side) > _MAX_TENSORS or len({t["name"] for t in side}) != len(side) or \
                not all(isinstance(t["name"], str) and _NAME.fullmatch(t["name"]) for t in side):
            return None
    return sig


def _dims(shape):
    """A framework's shape (ints, None or symbolic names for dimensions that vary) as ours."""
    if shape is None:
        return None
    return [d if isinstance(d, int) and d >= 0 else -1 for d in shape]


def _onnx_side(args):
    out = []
    for a in args:
        t = a.type if isinstance(a.type, str) else ""
        kind = t[len("tensor("):-1] if t.startswith("tensor(") else None
        out.append({"name": a.name, "dtype": _ONNX_TYPES.get(kind), "shape": _dims(a.shape)})
    return out
