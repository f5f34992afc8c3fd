# syntax=docker/dockerfile:1
# petsage-grpc: the health and smoke-test service of PetSage.
# The same steps as CI's install (pip installs the package from this tree), split in two stages:
# wheels are built in the first, and only they reach the runtime image.
FROM python:3.11.7-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY petsage_grpc ./petsage_grpc
# [all]: the postgres and redis checks' drivers too.
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[all]"

FROM python:3.11.7-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PETSAGE_HOST=0.0.0.0 \
    PETSAGE_PORT=50051
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin petsage
# The wheels are mounted from the first stage, never copied: no layer keeps them.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index /wheels/*.whl
# Nothing is written at run time: the image runs with a read-only root filesystem.
USER 10001:10001
# gRPC; the plaintext health-only port (--health-port); the admin HTTP port (--admin-port).
EXPOSE 50051 8081 9090
STOPSIGNAL SIGTERM
# Plaintext, so on the health-only port when one is set (a TLS main port needs one).
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
  CMD ["sh", "-c", "exec petsage-grpc probe -addr=127.0.0.1:${PETSAGE_HEALTH_PORT:-${PETSAGE_PORT:-50051}} -service=liveness"]
# petsage-grpc is PID 1 (exec form): it handles SIGTERM and SIGINT itself and starts no children.
ENTRYPOINT ["petsage-grpc"]
CMD ["serve"]
