# The replay backtest as a container: `quayside replay` with the full runtime (numba, pandas).
#   docker build --network host -f docker/replay.Dockerfile -t quayside-replay .
#   docker run --rm --network host --user "$(id -u):$(id -g)" \
#       -v "$PWD/data:/data:ro" -v "$PWD/results:/results" \
#       quayside-replay --data /data/quotes.csv --out /results/quotes
# Results land in the mounted folder, owned by the --user given. Offline, on a base without
# Python (CI): --build-arg BASE_IMAGE=local/debian:bookworm. See docs/containers.md.
#
# Built like support/Dockerfile (same `system` stage, so the two share its cached layer), with
# requirements.lock instead of the support subset, and one more layer: the engine's kernels
# compiled once at build time into NUMBA_CACHE_DIR, so a run starts in seconds instead of
# compiling for minutes. A host whose CPU differs from the build host's recompiles on first use
# and keeps the result there (the folder is writable by any --user for that reason).
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS system
ENV DEBIAN_FRONTEND=noninteractive
# Install only what the base lacks: Python (a bare Debian), the CA bundle (regenerated from
# /usr/local/share/ca-certificates, where an offline base keeps its proxy's CA) and time zones.
RUN set -eu; \
    need=""; \
    command -v python3 >/dev/null || need="$need python3"; \
    [ -s /etc/ssl/certs/ca-certificates.crt ] || need="$need ca-certificates"; \
    [ -d /usr/share/zoneinfo ] || need="$need tzdata"; \
    if [ -n "$need" ]; then \
        apt-get update -qq; \
        apt-get install -y -qq --no-install-recommends $need >/dev/null; \
    fi; \
    groupadd --system --gid 10001 quayside; \
    useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin quayside; \
    rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/cache/debconf/*-old /var/log/* \
        /usr/share/doc/* /usr/share/man/* /usr/share/info/* /usr/share/locale/*

FROM system AS deps
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
# A bare Debian's python3 needs python3-venv for `-m venv`; the official Python images do not.
RUN python3 -m venv /opt/venv >/dev/null 2>&1 || { \
        apt-get update -qq \
        && apt-get install -y -qq --no-install-recommends python3-venv >/dev/null \
        && python3 -m venv --clear /opt/venv; }
COPY requirements.lock /tmp/requirements.lock
RUN /opt/venv/bin/pip install --quiet --require-hashes -r /tmp/requirements.lock

# The venv as it ships: no installer and no test suites.
FROM deps AS venv
RUN set -eu; \
    site=$(/opt/venv/bin/python -c "import sysconfig; print(sysconfig.get_path('purelib'))"); \
    rm -rf /opt/venv/bin/pip* "$site"/pip "$site"/pip-* "$site"/setuptools "$site"/setuptools-* \
        "$site"/_distutils_hack "$site"/distutils-precedence.pth; \
    find /opt/venv -depth -type d -name tests -exec rm -rf {} +

FROM deps AS app
COPY pyproject.toml README.md /src/
COPY quayside /src/quayside
COPY core /src/core
COPY support /src/support
RUN /opt/venv/bin/pip install --quiet --no-deps --target /opt/quayside /src

FROM scratch
COPY --from=system / /
COPY --from=venv /opt/venv /opt/venv
COPY --from=app /opt/quayside /opt/quayside
ENV PATH=/opt/quayside/bin:/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONPATH=/opt/quayside \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LANG=C.UTF-8 \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib \
    NUMBA_CACHE_DIR=/opt/numba-cache
# Compile the kernels now: a short synthetic backtest (the run's output is thrown away).
RUN quayside replay --duration-s 60 --no-progress --out /tmp/warm-up >/dev/null \
    && rm -rf /tmp/warm-up /tmp/matplotlib \
    && chmod -R a+rwX /opt/numba-cache
USER 10001:10001
# The default --out (results/replay) is then /results/replay: mount the host's folder at /results.
WORKDIR /
ENTRYPOINT ["quayside", "replay"]
