"""The python worker's side of requests of several named tensors (src/common/manifest.h).

run(model, form, requests) is worker.py's _run_multi: the C worker hands it one request, or for a
batchable model several whose tensors agree on names, dtypes and every dimension but the first;
each request is (entries, room, room_offset, objects) with entries (name, dtype, shape,
memoryview) read-only over the caller's shared memory. The model is called as the caller called
it (form: model(a, b), model(name=a), model({name: a})); several requests' tensors are
concatenated along the first dimension (lists of strings joined) and each gets its own rows of
every output back. What the model returns (a tensor, a tuple, a list, a dict or Mapping of them,
a list of str or bytes) is written into each request's room: the output manifest, then the bytes,
each tensor aligned to 64 bytes of the arena. Returns [(status, length)] per request (status 0:
length bytes written; MS_E_TOO_LARGE: length bytes needed; another MS_E_* code: a message for
that request alone), or an error's text for them all.
"""
import collections.abc
import struct

import numpy as np

from . import _adapters, _pickling

MAGIC = 0x464D534D
HEADER = struct.Struct("<IIII")
ENTRY = struct.Struct("<32sIIII QQ 8q")
MAX = 16
TEXT_UTF8, TEXT_BYTES = 64, 65
ARGS, KWARGS, DICT, ONE, TUPLE, LIST, OBJECT = range(7)
E_INVAL, E_TOO_LARGE, E_BACKEND = -1, -13, -24  # MS_E_* (modelshare.h)
ALIGN = 64
# The words of a batchable model's answer that is not tensors: the client asks by a pickled
# call instead (_shared.py).
NOT_TENSORS = "not tensors: asked again by a pickled call"
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:-")


def name_ok(name):
    return isinstance(name, str) and 0 < len(name) < 32 and set(name) <= _NAME_CHARS


def read_text(view, count, utf8):
    """A list's bytes (manifest.h) as a list of str (utf8) or bytes; checked as ms__text_check."""
    if len(view) < 8 + 8 * count:
        raise ValueError(f"a list of {count} items in {len(view)} bytes")
    head = np.frombuffer(view, np.uint64, count + 1).copy()  # the caller's memory: read once
    lengths = head[1:].astype(np.int64)
    if int(head[0]) != count or (lengths < 0).any() or \
            int(lengths.sum()) != len(view) - 8 - 8 * count:
        raise ValueError("a list whose lengths do not fill its bytes")
    data = bytes(view[8 + 8 * count:])
    ends = np.cumsum(lengths).tolist()
    starts = [0] + ends[:-1]
    items = [data[a:b] for a, b in zip(starts, ends)]
    return [b.decode("utf-8") for b in items] if utf8 else items


def _inputs(entries, dtypes):
    out = []
    for name, dtype, shape, view in entries:
        if dtype in (TEXT_UTF8, TEXT_BYTES):
            out.append((name, read_text(view, shape[0], dtype == TEXT_UTF8)))
        else:
            out.append((name, np.frombuffer(view, dtypes[dtype]).reshape(shape)))
    return out


def _merge(per_request):
    """The requests' inputs, name by name, concatenated along the first dimension."""
    merged = []
    for i, (name, first) in enumerate(per_request[0]):
        parts = [r[i][1] for r in per_request]
        merged.append((name, sum(parts, []) if isinstance(first, list) else np.concatenate(parts)))
    return merged


def _length(named, dim):
    """A request's length along the pad dimension: its first tensor that has it."""
    return next((v.shape[dim] for _, v in named if isinstance(v, np.ndarray) and v.ndim > dim),
                None)


def _pad(per_request, pad):
    """Each tensor that has dimension pad["dim"] padded to the requests' longest along it, rounded
    up to pad["multiple"], with the value pad["value"] names for it (0 else). Returns the padded
    requests and that length (None when no tensor has the dimension)."""
    dim, values = pad["dim"], pad.get("value") or {}
    known = [n for n in (_length(r, dim) for r in per_request) if n is not None]
    if not known:
        return per_request, None
    multiple = int(pad.get("multiple") or 1)
    target = -(-max(known) // multiple) * multiple
    out = []
    for named in per_request:
        row = []
        for name, v in named:
            if isinstance(v, np.ndarray) and v.ndim > dim and v.shape[dim] < target:
                widths = [(0, 0)] * v.ndim
                widths[dim] = (0, target - v.shape[dim])
                v = np.pad(v, widths, constant_values=np.asarray(values.get(name, 0), v.dtype))
            row.append((name, v))
        out.append(row)
    return out, target


def _cut(values, dim, target, length):
    """Outputs that carry the padded length along dim, cut back to the caller's length."""
    if target is None or length is None or length == target:
        return values
    return [(name, v[(slice(None),) * dim + (slice(0, length),)]
             if isinstance(v, np.ndarray) and v.ndim > dim and v.shape[dim] == target else v)
            for name, v in values]


def _call(model, form, named):
    if form == ARGS:
        return model(*[v for _, v in named])
    if form == KWARGS:
        return model(**dict(named))
    return model(dict(named))


def _is_text(y):
    return isinstance(y, list) and len(y) > 0 and (all(type(v) is str for v in y) or
                                                    all(type(v) is bytes for v in y))


def text_list(y):
    """Whether y travels as a list of strings: a non-empty list of str, or of bytes."""
    return _is_text(y)


def _value(y, codes):
    """One output as an array of a plane dtype or a list of str/bytes; None when it is neither."""
    if _is_text(y):
        return y
    y = _adapters.plain(y)
    if isinstance(y, np.generic) or not (isinstance(y, np.ndarray) or hasattr(y, "__array__") or
                                         hasattr(y, "__dlpack__")):
        return None
    try:
        a = np.ascontiguousarray(np.asarray(y))
    except Exception:
        return None
    return a if a.dtype in codes and a.ndim <= 8 else None


def _outputs(y, codes):
    """(form, [(name, value)]) of what the model returned; None when it is not tensors."""
    if isinstance(y, tuple) or (isinstance(y, list) and not _is_text(y)):
        form, items = (TUPLE if isinstance(y, tuple) else LIST), \
            [(str(i), v) for i, v in enumerate(y)]
    elif isinstance(y, collections.abc.Mapping):
        form, items = DICT, list(y.items())
    else:
        form, items = ONE, [("0", y)]
    if not 0 < len(items) <= MAX or not all(name_ok(k) for k, _ in items):
        return None
    values = [(k, _value(v, codes)) for k, v in items]
    return None if any(v is None for _, v in values) else (form, values)


def _text_bytes(items):
    raw = [s.encode("utf-8") if type(s) is str else s for s in items]
    head = np.array([len(raw)] + [len(b) for b in raw], dtype=np.uint64).tobytes()
    return head + b"".join(raw)


def _write(room, room_off, form, values, codes):
    """The output manifest and bytes in room: (0, length), or (E_TOO_LARGE, length needed)."""
    pos = HEADER.size + ENTRY.size * len(values)
    places, blobs = [], []
    for name, v in values:
        pos += -(room_off + pos) % ALIGN
        if isinstance(v, list):
            blob = _text_bytes(v)
            kind = TEXT_UTF8 if (not v or type(v[0]) is str) else TEXT_BYTES
            shape, nbytes = (len(v),), len(blob)
        else:
            v = np.ascontiguousarray(v)
            blob, kind, shape, nbytes = v, codes[v.dtype], v.shape, v.nbytes
        places.append((name, kind, shape, pos, nbytes))
        blobs.append(blob)
        pos += nbytes
    if pos > len(room):
        return E_TOO_LARGE, pos
    HEADER.pack_into(room, 0, MAGIC, len(values), form, 0)
    dst = np.frombuffer(room, np.uint8)
    for i, ((name, kind, shape, at, nbytes), blob) in enumerate(zip(places, blobs)):
        dims = list(shape) + [0] * (8 - len(shape))
        ENTRY.pack_into(room, HEADER.size + ENTRY.size * i, name.encode(), kind, len(shape), 0,
                        0, room_off + at, nbytes, *dims)
        if nbytes:
            src = np.frombuffer(blob, np.uint8) if isinstance(blob, bytes) else \
                blob.reshape(-1).view(np.uint8)
            dst[at:at + nbytes] = src
    return 0, pos


def _split(values, rows):
    """Each request's rows of every output; an output without one row per input row is an
    error (a batchable model's promise)."""
    total = sum(rows)
    for name, v in values:
        n = len(v) if isinstance(v, list) else (v.shape[0] if v.ndim >= 1 else None)
        if n != total:
            raise ValueError(
                f"output {name!r} has {n if n is not None else 'no'} rows for a batch of {total} "
                f"rows: a batchable model's outputs must have one row per input row (or say "
                f"batchable=False)")
    out, start = [], 0
    for k in rows:
        out.append([(name, v[start:start + k]) for name, v in values])
        start += k
    return out


def run(model, form, requests, dtypes, codes, text, pad=None):
    """pad: the spec's "pad" ({"dim", "multiple", "value"}) or None. A request whose inputs
    cannot be read (a list that is not UTF-8) gets its own error; the others run."""
    answers, good, per_request = [None] * len(requests), [], []
    for i, (entries, _, _, _) in enumerate(requests):
        try:
            per_request.append(_inputs(entries, dtypes))
            good.append(i)
        except Exception as e:
            answers[i] = (E_INVAL, f"input: {type(e).__name__}: {e}"[:300])
    if good:
        got = _run_good(model, form, [requests[i] for i in good], per_request, codes, text, pad)
        if isinstance(got, str) and len(good) > 1:
            # The merged call failed, maybe for one request's sake: each runs alone, and only
            # the one the model refuses gets the error.
            got = [_run_good(model, form, [requests[i]], [r], codes, text, pad)
                   for i, r in zip(good, per_request)]
            got = [(E_BACKEND, g) if isinstance(g, str) else g[0] for g in got]
        if isinstance(got, str):
            return got
        for i, a in zip(good, got):
            answers[i] = a
    return answers


def _run_good(model, form, requests, per_request, codes, text, pad):
    try:
        lengths = target = None
        if pad:
            lengths = [_length(r, pad["dim"]) for r in per_request]
            per_request, target = _pad(per_request, pad)
        named = per_request[0] if len(requests) == 1 else _merge(per_request)
        y = _call(model, form, named)
        del named, per_request
        got = _outputs(y, codes)
        if got is None:
            if len(requests) == 1 and requests[0][3]:  # the caller takes any answer, pickled
                return [_write(requests[0][1], requests[0][2], OBJECT,
                               [("0", np.frombuffer(_pickling.dumps(("ok", y)), np.uint8))],
                               codes)]
            return (f"TypeError: the model returned {type(y).__name__}, expected a tensor, a "
                    f"tuple, list or dict of at most {MAX} tensors (names of 1 to 31 characters "
                    f"of [A-Za-z0-9_.:-]) or a list of str or bytes ({NOT_TENSORS})")
        out_form, values = got
        if len(requests) == 1:
            mine = [values]
        else:
            mine = _split(values, [_rows(entries) for entries, _, _, _ in requests])
        if pad:
            mine = [_cut(v, pad["dim"], target, n) for v, n in zip(mine, lengths)]
        return [_write(room, off, out_form, v, codes)
                for (_, room, off, _), v in zip(requests, mine)]
    except Exception as e:
        return text(e, 380)


def _rows(entries):
    return entries[0][2][0]
