# syntax=docker/dockerfile:1
# petsage-grpc: the health and smoke-test service of PetSage.
# Everything pip installs comes from the lock (requirements/*.txt, exported from uv.lock with the
# hash of every file), so two builds of one commit install the same files. Two stages: the first
# installs the package and its dependencies into a virtual environment, /opt/petsage; only that
# reaches the runtime image (no pip cache, no wheel, no build tool).
FROM python:3.11.7-slim-bookworm AS build
WORKDIR /src
COPY requirements/image.txt requirements/build.txt ./requirements/
# Wheels only (nothing is compiled), checked against the lock's hashes; and the locked setuptools,
# outside the environment. For an index behind a TLS proxy, pass its CA bundle as a build secret
# (mounted for this step only, never in a layer): --secret id=pip-ca,src=/path/to/ca-bundle.crt
RUN --mount=type=secret,id=pip-ca \
    if [ -f /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi; \
    python -m venv --without-pip /opt/petsage \
    && pip --python /opt/petsage/bin/python install --no-cache-dir --require-hashes \
      --only-binary=:all: -r requirements/image.txt \
    && pip install --no-cache-dir --require-hashes -r requirements/build.txt
COPY pyproject.toml README.md ./
COPY petsage_grpc ./petsage_grpc
RUN pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /tmp/wheel . \
    && pip --python /opt/petsage/bin/python install --no-cache-dir --no-deps --no-index \
      /tmp/wheel/*.whl

FROM python:3.11.7-slim-bookworm
# PETSAGE_ADDRESS_FILE: the server writes the ports it listens on there (in /dev/shm, a tmpfs
# that Docker, podman and Kubernetes give every container, read-only root or not), and the
# HEALTHCHECK probes what it says, however the port was set: flag, variable or config file.
ENV PATH=/opt/petsage/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PETSAGE_HOST=0.0.0.0 \
    PETSAGE_PORT=50051 \
    PETSAGE_ADDRESS_FILE=/dev/shm/petsage-grpc.json
RUN groupadd --system --gid 10001 petsage \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin petsage
COPY --from=build /opt/petsage /opt/petsage
# Nothing is written at run time but the address file: the image runs with a read-only root.
USER 10001:10001
# gRPC; the plaintext health-only port (--health-port); the admin HTTP port (--admin-port).
EXPOSE 50051 8081 9090
STOPSIGNAL SIGTERM
# Plaintext: the health-only port when one is set, else the main port (with TLS on the main port,
# set a health-only port too).
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
  CMD ["petsage-grpc", "probe", "-addr-file=/dev/shm/petsage-grpc.json", "-service=liveness"]
# petsage-grpc is PID 1 (exec form): it handles SIGTERM and SIGINT itself and starts no children.
ENTRYPOINT ["petsage-grpc"]
CMD ["serve"]
