"""modelshare.beam.MultiProcessShared: the drop-in for Beam's
apache_beam.utils.multi_process_shared.MultiProcessShared."""
import os
import tempfile
from typing import Generic, TypeVar

from . import _core
from ._beam_tags import _tag, _tag_key
from ._shared import Model, Shared, unload

T = TypeVar("T")

_DEFAULT_PATH = tempfile.gettempdir()


def _scoped_tag(tag, path):
    """Beam scopes a tag by its path (where its server's address file lives): the same tag under
    two paths is two objects. The default path adds nothing, so the tag reads as given."""
    path = os.path.abspath(os.fspath(path))
    if path == os.path.abspath(_DEFAULT_PATH):
        return _tag(tag)
    return _tag(f"{tag}@{path}")


class _Proxy(Model):
    """What MultiProcessShared.acquire() returns: a modelshare.Model (calls and methods run in the
    object's worker) that also answers the proxy methods Beam's own proxy has."""

    __slots__ = ()

    def singletonProxy_call__(self, *args, **kwargs):  # noqa: N802 - Beam's name
        return self(*args, **kwargs)

    def singletonProxy_release(self):  # noqa: N802 - Beam's name
        _release_once(self)

    def singletonProxy_unsafe_hard_delete(self):  # noqa: N802 - Beam's name
        _hard_delete(self.tag)


def _release_once(obj):
    if obj.released:
        raise _core.InvalidArgument(
            f"release(): the object of tag {obj.tag!r} was released already (each acquire() "
            "is released once)")
    obj.release()


def _hard_delete(tag):
    try:
        unload(tag, force=True)
    except _core.UnknownTag:
        pass  # nobody holds it: nothing to delete, as in Beam


class MultiProcessShared(Generic[T]):
    """A drop-in for apache_beam.utils.multi_process_shared.MultiProcessShared: the same
    arguments, acquire() and release(obj). The object lives in a modelshare worker process (one
    per machine, tag and path); acquire() returns a modelshare.Model whose calls and methods run
    there (a proxy that also has Beam's singletonProxy_* methods).

    As in Beam:
    - the tag, scoped by path, is the identity: the first constructor acquired under a tag is the
      one loaded, and later ones (the same lambda made again in each worker's DoFn.setup(), say)
      are not compared. strict=True compares them as modelshare.Shared does (their code and
      captured values; SpecConflict when they differ); key="..." names the identity yourself.
    - the release of the last lease destroys the object (keep_alive=0): the next acquire()
      builds a fresh one. keep_alive=SECONDS keeps it loaded that long with no lease.
    - releasing an object twice raises; unsafe_hard_delete() of a tag nobody holds does nothing.
    - obj(x) returns whatever the object returns, and the object may modify its input (its own
      copy, never the caller's array).

    Unlike Beam, calls of several processes are merged into one batch only when batchable=True
    (each output row depends only on its own input row), and the object is called by one thread
    at a time unless thread_safe=True. always_proxy and spawn_process change nothing: the object
    is always in its own process and every call goes through the proxy. Other keyword arguments
    are modelshare spec fields (batchable, max_batch, memory, device, ...).
    """

    def __init__(self, constructor, tag, *, path=_DEFAULT_PATH, always_proxy=None,
                 spawn_process=False, strict=False, key=None, keep_alive=0, **spec):
        self._tag = tag
        self._path = path
        self._always_proxy = always_proxy
        self._spawn_process = spawn_process
        scoped = _scoped_tag(tag, path)
        self._shared = Shared(constructor, tag=scoped, key=_tag_key(scoped, strict, key),
                              keep_alive=keep_alive, **spec)

    @property
    def shared(self):
        """The modelshare.Shared behind it."""
        return self._shared

    def acquire(self) -> T:
        """A lease on the object (built first when no process of the machine holds one)."""
        return self._shared._acquire_as(_Proxy)

    def release(self, obj):
        """Ends the lease of an object from acquire(); a second release of it raises."""
        _release_once(obj)

    def unsafe_hard_delete(self):
        """Stops the object's worker now, whoever holds it (their next calls fail); nothing when
        no process holds it."""
        _hard_delete(self._shared.tag)
