# syntax=docker/dockerfile:1
# The ipt-careplans service. Build on python:3.11-slim pinned by its digest:
#   docker pull python:3.11-slim
#   docker build -t ipt-careplans \
#     --build-arg PYTHON_IMAGE="$(docker inspect --format '{{index .RepoDigests 0}}' python:3.11-slim)" .
# Migrate (once per release):  docker run --rm -e IPT_DATABASE_URL=… ipt-careplans db upgrade
# Run:                         docker run -p 8000:8000 -e IPT_DATABASE_URL=… ipt-careplans

# The base image of both stages, by digest (name@sha256:…): a tag can be moved to other
# content, a digest cannot. No default: the build refuses to start without it.
ARG PYTHON_IMAGE

# Builder: the wheels of the service and its dependencies, installed into a virtualenv.
FROM ${PYTHON_IMAGE} AS builder
ARG PYTHON_IMAGE
RUN python -c "import re, sys; sys.exit(None if re.fullmatch(r'[^@\s]+@sha256:[0-9a-f]{64}', sys.argv[1]) else f'PYTHON_IMAGE must name the base image by digest (name@sha256:...), not {sys.argv[1]!r}')" "${PYTHON_IMAGE}"
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml README.md ./
COPY api ./api
COPY service ./service
COPY fhir_mappings ./fhir_mappings
RUN /opt/venv/bin/pip wheel --wheel-dir /wheels . \
    && /opt/venv/bin/pip install --no-index --find-links /wheels ipt-careplans \
    && rm -rf /wheels

# Final: the virtualenv only; no compilers, no build files, no root.
FROM ${PYTHON_IMAGE}
# SQLite in /data only for a trial run; production sets IPT_DATABASE_URL to PostgreSQL.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    IPT_DATABASE_URL=sqlite:////data/ipt-careplans.db
RUN groupadd --system --gid 10001 ipt \
    && useradd --system --uid 10001 --gid ipt --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin ipt \
    && mkdir /data \
    && chown 10001:10001 /data
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"]
ENTRYPOINT ["ipt-careplans"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
