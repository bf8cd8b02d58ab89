# fastweights-serve: the onnxruntime + FastAPI service and its bundled model repository.
#
#   docker build -t fastweights-serve:cpu .                                   # CPU onnxruntime (default, small)
#   docker build --build-arg ONNXRUNTIME=gpu -t fastweights-serve:gpu .       # onnxruntime-gpu + CUDA/cuDNN wheels
#   docker run --rm -p 8000:8000 fastweights-serve:cpu                        # then: curl localhost:8000/v2/health/ready
#
# The runtime stage holds a venv with the serving dependencies (pyproject.toml's `serve` extra, at the versions
# of constraints.txt), the service code and model_repository/ at /models: no torch, no compilers, no build
# tools. It runs as a non-root user and is configured through the service's own FWS_* environment settings.
#
# BASE_IMAGE must provide python3 (>= 3.11) with the venv module; build and runtime stages share it, so the
# venv's interpreter link stays valid. The tests build a local Debian base (scripts/docker-test.sh) because no
# registry is reachable there; real users keep the public default.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
ARG ONNXRUNTIME=cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
RUN python3 -m venv /opt/fws
# Dependencies before sources: this (large) layer is reused while only the code changes.
# The versions come from constraints.txt (`make lock`): the same packages in every build, whatever the date.
COPY pyproject.toml constraints.txt deploy/serve_requirements.py /build/
RUN python3 /build/serve_requirements.py --onnxruntime "${ONNXRUNTIME}" /build/pyproject.toml >/build/requirements.txt \
    && cat /build/requirements.txt \
    && /opt/fws/bin/pip install -c /build/constraints.txt -r /build/requirements.txt
COPY README.md /build/
COPY contract /build/contract
COPY inference_grpc /build/inference_grpc
COPY service /build/service
# The project itself, without dependencies (they are above): `service` and the torch-free packages it imports
# (`contract`, and `inference_grpc`: the generated gRPC code). Training and export (`model/`, `export/`) stay
# out of the image; torch is not installed.
# pip and setuptools leave the runtime venv: nothing is installed at run time.
RUN /opt/fws/bin/pip install --no-deps /build \
    && /opt/fws/bin/python -c "import service, contract, inference_grpc, service.main, service.grpc.server" \
    && ! /opt/fws/bin/python -c "import torch" 2>/dev/null \
    && /opt/fws/bin/python -m pip uninstall -q -y pip setuptools
# onnxruntime-gpu takes CUDA/cuDNN from NVIDIA's wheels under site-packages/nvidia/*/lib: register those with
# the dynamic loader so the CUDA execution provider finds them without LD_LIBRARY_PATH.
RUN if [ "${ONNXRUNTIME}" = gpu ]; then \
        find /opt/fws/lib -path '*/site-packages/nvidia/*/lib' -type d >/opt/fws/nvidia-libs.conf; \
    else : >/opt/fws/nvidia-libs.conf; fi
# Lets scripts/docker-test.sh tell stale build-stage images apart (and prune only those).
LABEL io.fastweights.stage=build

FROM ${BASE_IMAGE} AS runtime
ARG ONNXRUNTIME=cpu
LABEL org.opencontainers.image.title="fastweights-serve" \
      org.opencontainers.image.description="Fast-weight associative-memory RNNs served with onnxruntime (native JSON API + Open Inference Protocol V2)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.fastweights.onnxruntime="${ONNXRUNTIME}"
RUN groupadd --system --gid 10001 fws \
    && useradd --system --uid 10001 --gid fws --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin fws
COPY --from=build /opt/fws /opt/fws
RUN cp /opt/fws/nvidia-libs.conf /etc/ld.so.conf.d/fws-nvidia.conf && ldconfig
COPY deploy/healthcheck.py /opt/fws/healthcheck.py
COPY model_repository /models
ENV PATH=/opt/fws/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ORT_DISABLE_TELEMETRY=1 \
    FWS_HOST=0.0.0.0 \
    FWS_PORT=8000 \
    FWS_GRPC_PORT=8001 \
    FWS_MODEL_REPOSITORY=/models
USER fws:fws
WORKDIR /tmp
# 8000: HTTP (native /v1 + V2 REST); 8001: the V2 protocol over gRPC (+ grpc.health.v1).
EXPOSE 8000 8001
# Docker's own probe of the V2 readiness endpoint (503 while the models load and warm up).
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["/opt/fws/bin/python", "/opt/fws/healthcheck.py"]
# Exec form: the server is PID 1's direct child under `init: true` (or PID 1 itself) and gets SIGTERM, so
# `docker stop` drains it instead of waiting 10 s and killing it.
ENTRYPOINT ["/opt/fws/bin/python", "-m", "service"]
