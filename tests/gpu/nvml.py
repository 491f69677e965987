"""NVML from Python with ctypes, for the GPU tests: what the card and its processes hold."""
import ctypes


class _Mem(ctypes.Structure):
    _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong),
                ("used", ctypes.c_ulonglong)]


class _Proc(ctypes.Structure):
    _fields_ = [("pid", ctypes.c_uint), ("used", ctypes.c_ulonglong),
                ("gpu_instance", ctypes.c_uint), ("compute_instance", ctypes.c_uint)]


class NVML:
    def __init__(self):
        self.lib = ctypes.CDLL("libnvidia-ml.so.1")
        rc = self.lib.nvmlInit_v2()
        if rc != 0:
            raise OSError(f"nvmlInit_v2 failed: NVML error {rc}")

    def count(self):
        n = ctypes.c_uint()
        assert self.lib.nvmlDeviceGetCount_v2(ctypes.byref(n)) == 0
        return n.value

    def _dev(self, index):
        h = ctypes.c_void_p()
        assert self.lib.nvmlDeviceGetHandleByIndex_v2(index, ctypes.byref(h)) == 0
        return h

    def memory(self, index=0):
        """(total, used) bytes of the card."""
        m = _Mem()
        assert self.lib.nvmlDeviceGetMemoryInfo(self._dev(index), ctypes.byref(m)) == 0
        return m.total, m.used

    def processes(self, index=0):
        """{pid: bytes} of the compute processes (CUDA contexts) on the card."""
        n = ctypes.c_uint(256)
        buf = (_Proc * 256)()
        fn = getattr(self.lib, "nvmlDeviceGetComputeRunningProcesses_v3", None) or \
            self.lib.nvmlDeviceGetComputeRunningProcesses_v2
        assert fn(self._dev(index), ctypes.byref(n), buf) == 0
        return {buf[i].pid: buf[i].used for i in range(n.value)}


def probe():
    """(NVML, None) when a GPU is usable, else (None, the reason)."""
    try:
        nv = NVML()
    except OSError as e:
        return None, f"no NVIDIA driver (libnvidia-ml.so.1: {e})"
    if nv.count() == 0:
        return None, "NVML sees no GPU"
    return nv, None
