# athena-cdc in a container: see docs/operations.md.
#   docker build -t athena-cdc .
#   docker run -d -p 4053:4053 -v athena-cdc-data:/data --stop-timeout 20 athena-cdc
# The build stage runs the README's install step as written (tests/test_operations_doc.py
# keeps the two the same); the runtime stage gets only the virtual environment.

FROM python:3.11-slim AS build
WORKDIR /opt/athena-cdc
COPY . .
RUN python3 -m venv .venv && .venv/bin/pip install -q .

FROM python:3.11-slim
# A user of its own: the server needs no privileges (4053 is not a privileged port).
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin athena \
    && mkdir /data && chown athena /data
# Same path as in the build stage: a virtual environment is not relocatable.
COPY --from=build /opt/athena-cdc/.venv /opt/athena-cdc/.venv
USER athena
VOLUME /data
EXPOSE 4053
# /ready is 503 until the log and every source are up; the image has no curl.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/opt/athena-cdc/.venv/bin/python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:4053/ready', timeout=4)"]
ENTRYPOINT ["/opt/athena-cdc/.venv/bin/athena-cdc", "serve"]
CMD ["--host", "0.0.0.0", "--data-dir", "/data"]
