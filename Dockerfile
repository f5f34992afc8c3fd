# petsage-grpc: the health and smoke-test service of PetSage.
# The same steps as CI's install (pip installs the package from this tree), split in two stages:
# wheels are built in the first, and only they reach the runtime image.
FROM python:3.11.7-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY petsage_grpc ./petsage_grpc
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11.7-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PETSAGE_HOST=0.0.0.0 \
    PETSAGE_PORT=50051
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin petsage
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index /wheels/*.whl && rm -rf /wheels
# Nothing is written at run time: the image runs with a read-only root filesystem.
USER 10001:10001
# gRPC; the plaintext health-only port (--health-port); the admin HTTP port (--admin-port).
EXPOSE 50051 8081 9090
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
  CMD ["petsage-grpc", "probe", "-addr=127.0.0.1:50051", "-service=liveness"]
# petsage-grpc is PID 1 (exec form): it handles SIGTERM and SIGINT itself and starts no children.
ENTRYPOINT ["petsage-grpc"]
CMD ["serve"]
