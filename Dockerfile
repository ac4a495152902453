# modgate: one image for `modgate serve`, `modgate executor` and `modgate migrate`.
#
# Stage 1 builds wheels for modgate and every dependency (compilers live only here); stage 2 is
# a slim runtime that installs those wheels and nothing else. The base image is pinned to an
# exact Python and Debian release; pin it by digest too in your registry mirror
# (python:3.11.10-slim-bookworm@sha256:...) for fully reproducible builds.

FROM python:3.11.10-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY proxy ./proxy
RUN pip wheel --wheel-dir /wheels .

FROM python:3.11.10-slim-bookworm AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MODGATE_LISTEN=0.0.0.0:8080 \
    MODGATE_ADMIN_LISTEN=0.0.0.0:9090 \
    MODGATE_EXECUTOR_LISTEN=0.0.0.0:8090 \
    MODGATE_HEALTH_URL=http://127.0.0.1:9090/healthz
RUN useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin modgate
COPY --from=build /wheels /wheels
RUN pip install --no-index --find-links=/wheels modgate && rm -rf /wheels
WORKDIR /app
COPY config ./config
USER 10001
EXPOSE 8080 9090 8090
# serve: the admin port's /healthz; for an executor container set
# MODGATE_HEALTH_URL=http://127.0.0.1:8090/healthz (Kubernetes uses the chart's probes instead).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import os, sys, urllib.request; sys.exit(0 if urllib.request.urlopen(os.environ['MODGATE_HEALTH_URL'], timeout=2).status == 200 else 1)"]
# Exec form: modgate is PID 1 and gets SIGTERM itself (it drains, then exits 0).
STOPSIGNAL SIGTERM
ENTRYPOINT ["modgate"]
CMD ["serve"]
