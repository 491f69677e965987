#!/usr/bin/env bash
# Installs the Debian packages the build and the tests need, only those that are missing.
# Non-interactive; uses sudo when not run as root. Does nothing when all are present.
set -euo pipefail

packages=(gcc make cmake pkg-config libjansson-dev libopenblas-dev libcmocka-dev libmicrohttpd-dev
          python3 python3-venv python3-pip util-linux procps
          clang-format  # make lint's format-check (.clang-format)
          openjdk-17-jre-headless)  # Java for PySpark (tests/python/test_spark.py)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# A Python that can make a venv may come from elsewhere (pyenv): then the Debian ones are not needed.
if python3 -c 'import venv, ensurepip' 2>/dev/null; then
    keep=()
    for p in "${missing[@]}"; do
        case "$p" in python3|python3-venv|python3-pip) ;; *) keep+=("$p") ;; esac
    done
    missing=("${keep[@]+"${keep[@]}"}")
fi
# A Java of 17 or later from elsewhere (a JDK, Temurin) runs Spark as well.
if java -version 2>&1 | grep -Eq 'version "(1[7-9]|[2-9][0-9])'; then
    keep=()
    for p in "${missing[@]+"${missing[@]}"}"; do
        [ "$p" = openjdk-17-jre-headless ] || keep+=("$p")
    done
    missing=("${keep[@]+"${keep[@]}"}")
fi
# The Python package's extension module is compiled against python3's own headers.
if ! python3 -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
        2>/dev/null; then
    missing+=(python3-dev)
fi
[ ${#missing[@]} -eq 0 ] && exit 0

echo "installing Debian packages: ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
    sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
