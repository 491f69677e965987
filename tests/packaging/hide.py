"""Runs a command as root in a new mount namespace (`unshare -m`) where this machine looks like one
that never built anything: no compiler, no headers, no -dev packages, no build tree.

Hidden by mounts that only the namespace sees (the machine itself is untouched):
- an empty tmpfs over /usr/include, /usr/local/include, the interpreter's own include folder
  (Python.h), the pkg-config folders, /usr/lib/gcc and /usr/libexec/gcc (cc1, collect2), the CUDA
  toolkit and the repository checkout (sources, build/, .venv, python/build);
- /dev/null bound over each compiler, linker, assembler and build tool found on PATH (cc, gcc,
  clang, ld, as, cmake, make, nvcc, pkg-config...), and over the runtime libraries the wheel must
  carry itself (libjansson, libopenblas, libmicrohttpd, libgfortran): loading any of them from the
  system fails, so what runs, runs from the wheel.
"""
import glob
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig

TOOLS = ["cc", "gcc", "c++", "g++", "cpp", "clang", "clang++", "ld", "ld.bfd", "ld.gold", "as",
         "cmake", "make", "gmake", "ninja", "nvcc", "pkg-config", "pkgconf", "x86_64-linux-gnu-gcc",
         "x86_64-linux-gnu-gcc-12", "x86_64-linux-gnu-ld", "x86_64-linux-gnu-as"]
LIBS = ["libjansson.so*", "libopenblas*.so*", "libmicrohttpd.so*", "libgfortran.so*",
        "libcmocka.so*"]
LIBDIRS = ["/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu",
           "/usr/lib/x86_64-linux-gnu/openblas-pthread", "/usr/local/lib"]


def hidden(root):
    """(directories to cover with an empty tmpfs, files to cover with /dev/null)."""
    dirs = ["/usr/include", "/usr/local/include", "/usr/lib/x86_64-linux-gnu/pkgconfig",
            "/usr/share/pkgconfig", "/usr/lib/gcc", "/usr/libexec/gcc", "/usr/local/cuda",
            sysconfig.get_paths()["include"], str(root)]
    files = set()
    for name in TOOLS:
        for folder in os.environ.get("PATH", "").split(":") + ["/usr/bin", "/usr/local/bin"]:
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                files.add(os.path.realpath(path))
    for d in LIBDIRS:
        for pattern in LIBS:
            files.update(os.path.realpath(p) for p in glob.glob(os.path.join(d, pattern)))
    return [d for d in dirs if os.path.isdir(d)], sorted(f for f in files if os.path.isfile(f))


def available():
    """None when the namespace can be made, else why not."""
    if os.geteuid() != 0:
        return "needs root (unshare -m and mounts)"
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    r = subprocess.run(["unshare", "-m", "true"], capture_output=True, text=True)
    if r.returncode != 0:
        return f"unshare -m fails here: {r.stderr.strip()}"
    return None


def run(argv, root, env=None, timeout=600, unshare=()):
    """argv in the namespace (plus the namespaces of the unshare flags, e.g. ["-n"]: no
    network); returns the CompletedProcess (text)."""
    dirs, files = hidden(root)
    script = ["set -e", "mount --make-rprivate /"]
    # Files first: a tmpfs over a folder would hide the file to cover.
    script += [f"mount --bind /dev/null {shlex.quote(f)}" for f in files]
    script += [f"mount -t tmpfs -o size=1m,mode=0755 none {shlex.quote(d)}" for d in dirs]
    script.append("exec " + " ".join(shlex.quote(a) for a in argv))
    return subprocess.run(["unshare", "-m", *unshare, "sh", "-c", "\n".join(script)], env=env,
                          capture_output=True, text=True, timeout=timeout)


if __name__ == "__main__":  # python hide.py ROOT CMD...: try it by hand
    r = run(sys.argv[2:], sys.argv[1])
    sys.stdout.write(r.stdout)
    sys.stderr.write(r.stderr)
    sys.exit(r.returncode)
