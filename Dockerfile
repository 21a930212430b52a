# citystream images, one target per role, each with only what that role installs (pyproject extras):
#   docker build --target bridge    -t citystream-bridge:0.1.0 .     (also runs `citystream topics apply`)
#   docker build --target worker    -t citystream-worker:0.1.0 .     (Tesseract with Thai data)
#   docker build --target sink      -t citystream-sink:0.1.0 .
#   docker build --target gateway   -t citystream-gateway:0.1.0 .
#   docker build --target simulator -t citystream-simulator:0.1.0 .
#   docker build --target console   -t citystream-console:0.1.0 .     (the control-room web console)
# `make images` builds them all. Every image runs as uid/gid 10001 and works with a read-only root
# filesystem: the only writable paths are /var/lib/citystream (data: spool, Faust data dir, frames,
# chDB) and /tmp, both declared volumes. Debian package versions are those of bookworm (checked with
# apt-cache policy on a bookworm machine); tests/deploy/test_dockerfile.py lints this file (hadolint).

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# ---- shared runtime base -------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/tmp \
    PATH=/opt/venv/bin:$PATH
RUN groupadd --system --gid 10001 citystream \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/citystream --no-create-home citystream \
 && mkdir -p /var/lib/citystream /etc/citystream \
 && chown 10001:10001 /var/lib/citystream

# ---- build: sources and one virtualenv per role (nothing of this stage ships but /opt/venv) -------
FROM base AS src
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml README.md ./
COPY citystream ./citystream
COPY ingest ./ingest
COPY processors ./processors
COPY sinks ./sinks
COPY schemas ./schemas
COPY bench ./bench
COPY console ./console

# Every requirement is pinned (==) in pyproject.toml's extras, which hadolint cannot see (DL3013).
FROM src AS venv-gateway
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[gateway]"

FROM src AS venv-simulator
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[simulator]"

FROM src AS venv-bridge
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[bridge]"

FROM src AS venv-worker
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[worker]"

FROM src AS venv-sink
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[sink]"

FROM src AS venv-console
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[console]"

# ---- role images ---------------------------------------------------------------------------------
FROM base AS gateway
COPY --from=venv-gateway /opt/venv /opt/venv
VOLUME ["/var/lib/citystream", "/tmp"]
USER 10001:10001
WORKDIR /var/lib/citystream
ENTRYPOINT ["citystream"]
CMD ["--config", "/etc/citystream/citystream.yaml", "gateway"]

FROM base AS simulator
# Thai fonts: simulated plates are drawn with them (processors/plates/synth.py)
RUN apt-get update \
 && apt-get install -y --no-install-recommends fonts-thai-tlwg=1:0.7.3-1 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=venv-simulator /opt/venv /opt/venv
VOLUME ["/var/lib/citystream", "/tmp"]
USER 10001:10001
WORKDIR /var/lib/citystream
ENTRYPOINT ["citystream"]
CMD ["--config", "/etc/citystream/citystream.yaml", "gateway", "simulate", "--gateways", "2", "--duration", "31536000"]

FROM base AS bridge
COPY --from=venv-bridge /opt/venv /opt/venv
VOLUME ["/var/lib/citystream", "/tmp"]
USER 10001:10001
WORKDIR /var/lib/citystream
ENTRYPOINT ["citystream"]
CMD ["--config", "/etc/citystream/citystream.yaml", "bridge"]

FROM base AS worker
# Tesseract's Thai and English data for plate reading (the tesserocr wheel carries the library)
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      tesseract-ocr=5.3.0-2 tesseract-ocr-tha=1:4.1.0-2 tesseract-ocr-eng=1:4.1.0-2 \
 && rm -rf /var/lib/apt/lists/*
ENV TESSDATA_PREFIX=/usr/share/tesseract-ocr/5/tessdata
COPY --from=venv-worker /opt/venv /opt/venv
VOLUME ["/var/lib/citystream", "/tmp"]
USER 10001:10001
WORKDIR /var/lib/citystream
ENTRYPOINT ["citystream"]
CMD ["--config", "/etc/citystream/citystream.yaml", "worker"]

FROM base AS sink
COPY --from=venv-sink /opt/venv /opt/venv
VOLUME ["/var/lib/citystream", "/tmp"]
USER 10001:10001
WORKDIR /var/lib/citystream
ENTRYPOINT ["citystream"]
CMD ["--config", "/etc/citystream/citystream.yaml", "sink"]

FROM base AS console
COPY --from=venv-console /opt/venv /opt/venv
VOLUME ["/var/lib/citystream", "/tmp"]
USER 10001:10001
WORKDIR /var/lib/citystream
EXPOSE 8088
ENTRYPOINT ["citystream"]
CMD ["--config", "/etc/citystream/citystream.yaml", "console"]
