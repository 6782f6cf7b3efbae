# syntax=docker/dockerfile:1
# Build: docker build -t wmiwatch:0.1.0 .   (then tag and push it to your registry)
FROM python:3.11.10-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/wmiwatch
# Dependencies from the lock (pinned, hashed): two builds of one commit install the same bytes.
COPY requirements.lock ./
RUN /opt/wmiwatch/bin/pip install --require-hashes --no-deps -r requirements.lock
COPY pyproject.toml README.md LICENSE NOTICE ./
COPY rules ./rules
COPY topics ./topics
COPY tests/fixtures/demo ./tests/fixtures/demo
COPY tests/fixtures/rules ./tests/fixtures/rules
COPY pipeline ./pipeline
# The wheel carries the rules, topic definitions and rule fixtures (pipeline/content links them).
RUN /opt/wmiwatch/bin/pip install --no-deps --no-compile .

FROM python:3.11.10-slim-bookworm
LABEL org.opencontainers.image.title="wmiwatch" \
      org.opencontainers.image.description="Splunk-style threat detections over Windows event streams in Kafka" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY LICENSE NOTICE /usr/share/doc/wmiwatch/
ENV PATH=/opt/wmiwatch/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    WMIWATCH_DATA_DIR=/var/lib/wmiwatch
RUN groupadd --system --gid 10001 wmiwatch \
    && useradd --system --uid 10001 --gid wmiwatch --home-dir /app --shell /usr/sbin/nologin wmiwatch \
    && mkdir -p /var/lib/wmiwatch && chown wmiwatch:wmiwatch /var/lib/wmiwatch
COPY --from=build /opt/wmiwatch /opt/wmiwatch
WORKDIR /app
USER 10001:10001
EXPOSE 9108
ENTRYPOINT ["wmiwatch"]
CMD ["worker"]
