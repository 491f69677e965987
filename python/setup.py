"""Builds the modelshare package: CMake builds the C project at the repository root (this folder's
parent) with the extension module switched on, and the module, the daemon and the worker are
copied into the package. `pip install ./python` from a checkout is the way in."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# Programs that travel inside the package: the library starts modelshared from beside the
# extension module, and modelshared starts modelshare-worker from beside itself.
PROGRAMS = ("modelshared", "modelshare-worker")


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        if not (ROOT / "CMakeLists.txt").is_file() or not (ROOT / "include" / "modelshare.h").is_file():
            raise RuntimeError(
                f"modelshare: expected the C project at {ROOT} (CMakeLists.txt, include/); build "
                "the package from a checkout of the repository: pip install ./python")
        build = Path(self.build_temp).resolve() / "cmake"
        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL") or str(os.cpu_count() or 2)
        self._run(["cmake", "-S", str(ROOT), "-B", str(build), "-DCMAKE_BUILD_TYPE=RelWithDebInfo",
                   "-DMS_TESTS=OFF", "-DMS_PYTHON=ON", f"-DPython3_EXECUTABLE={sys.executable}"])
        self._run(["cmake", "--build", str(build), "-j", jobs, "--target", "ms_python",
                   *PROGRAMS])

        target = Path(self.get_ext_fullpath(ext.name))
        target.parent.mkdir(parents=True, exist_ok=True)
        built = sorted((build / "python").glob("_core*.so"))
        if len(built) != 1:
            raise RuntimeError(f"modelshare: expected one _core*.so in {build / 'python'}, "
                               f"found {[p.name for p in built]}")
        shutil.copyfile(built[0], target)
        for name in PROGRAMS:
            dst = target.parent / name
            shutil.copyfile(build / name, dst)
            os.chmod(dst, 0o755)

    def get_outputs(self):
        outputs = super().get_outputs()
        for ext in self.extensions:
            folder = Path(self.get_ext_fullpath(ext.name)).parent
            outputs += [str(folder / name) for name in PROGRAMS]
        return outputs

    @staticmethod
    def _run(cmd):
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if r.returncode != 0:
            sys.stderr.write(r.stdout)
            raise RuntimeError(f"modelshare: {' '.join(cmd)} exited {r.returncode}")


setup(
    ext_modules=[Extension("modelshare._core", sources=[])],
    cmdclass={"build_ext": CMakeBuild},
)
