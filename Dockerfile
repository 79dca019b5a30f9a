# spacing-scp: DICOM storage node.
#   docker build -t spacing-scp .
#   docker run -p 11112:11112 -p 8080:8080 -v spacing-data:/data spacing-scp
# Configuration by environment variables SPACING_SCP_<SECTION>_<KEY> (see README).
FROM python:3.11.7-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SPACING_SCP_STORAGE_DATA_DIR=/data \
    SPACING_SCP_HTTP_HOST=0.0.0.0

WORKDIR /app
# Pinned dependencies first (a layer that changes only with requirements.lock) ...
COPY requirements.lock ./
RUN pip install --no-cache-dir --requirement requirements.lock
# ... then the node itself, without resolving anything again.
COPY pyproject.toml README.md ./
COPY scp ./scp
COPY storage ./storage
COPY config ./config
# hadolint ignore=DL3013
RUN pip install --no-cache-dir --no-deps . \
    && useradd --system --uid 10001 --home-dir /data spacing \
    && mkdir -p /data && chown 10001 /data

USER 10001
VOLUME ["/data"]
EXPOSE 11112 8080

HEALTHCHECK --interval=30s --timeout=10s --start-period=20s --retries=3 \
    CMD ["spacing-scp", "echo", "--host", "127.0.0.1"]

# Exec form: the node is PID 1 and receives SIGTERM itself (graceful stop: it stops
# accepting, lets running associations finish within [node] shutdown_grace_s, exits 0).
ENTRYPOINT ["spacing-scp"]
CMD ["serve", "--config", "/app/config/spacing-scp.toml"]
