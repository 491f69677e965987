"""modelshare.beam.MultiProcessShared: the drop-in for Beam's
apache_beam.utils.multi_process_shared.MultiProcessShared."""
import tempfile

from ._beam_tags import _tag, _tag_key
from ._shared import Shared, unload


class MultiProcessShared:
    """A drop-in for apache_beam.utils.multi_process_shared.MultiProcessShared: the same
    arguments, acquire() and release(obj). The object lives in a modelshare worker process (one
    per machine and tag); acquire() returns a modelshare.Model whose calls and methods run there.

    As in Beam, the tag alone is the identity: the first constructor acquired under a tag is
    the one loaded, and later ones (the same lambda made again in each worker's DoFn.setup(),
    say) are not compared. strict=True compares them as modelshare.Shared does (their code and
    captured values; SpecConflict when they differ); key="..." names the identity yourself.

    path, always_proxy and spawn_process are accepted for compatibility and change nothing: the
    object is always in its own process and every call goes through the proxy. Other keyword
    arguments are modelshare spec fields (keep_alive, max_batch, memory, device, ...).
    """

    def __init__(self, constructor, tag, *, path=tempfile.gettempdir(), always_proxy=None,
                 spawn_process=False, strict=False, key=None, **spec):
        self._tag = tag
        self._path = path
        self._always_proxy = always_proxy
        self._spawn_process = spawn_process
        self._shared = Shared(constructor, tag=_tag(tag), key=_tag_key(tag, strict, key), **spec)

    @property
    def shared(self):
        """The modelshare.Shared behind it."""
        return self._shared

    def acquire(self):
        """A lease on the object (loaded first when no process of the machine has it)."""
        return self._shared.acquire()

    def release(self, obj):
        """Ends the lease of an object from acquire()."""
        obj.release()

    def unsafe_hard_delete(self):
        """Stops the object's worker now, whoever holds it (their next calls fail)."""
        unload(self._shared.tag, force=True)
