# spacing-scp: DICOM storage node. Build: docker build -t spacing-scp .
# Run:   docker run -p 11112:11112 -v spacing-data:/data spacing-scp
FROM python:3.11.7-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    SPACING_SCP_STORAGE_DATA_DIR=/data \
    SPACING_SCP_HTTP_HOST=0.0.0.0

WORKDIR /app
COPY pyproject.toml README.md ./
COPY scp ./scp
COPY storage ./storage
COPY config ./config
RUN pip install --no-cache-dir ".[postgres]" \
    && useradd --system --uid 10001 --home-dir /data spacing \
    && mkdir -p /data && chown spacing /data

USER spacing
VOLUME ["/data"]
EXPOSE 11112 8080

HEALTHCHECK --interval=30s --timeout=10s --start-period=20s --retries=3 \
    CMD ["spacing-scp", "echo", "--host", "127.0.0.1", "--port", "11112"]

# exec form: the node is PID 1 and receives SIGTERM itself (graceful stop).
ENTRYPOINT ["spacing-scp"]
CMD ["serve", "--config", "/app/config/spacing-scp.toml"]
