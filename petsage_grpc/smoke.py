"""`petsage.v1.SmokeService`: the instance's overall status, as a deployment pipeline asks it."""

from __future__ import annotations

import time

import grpc

from petsage_grpc import __version__
from petsage_grpc._gen.petsage.v1 import smoke_pb2, smoke_pb2_grpc
from petsage_grpc.health import OVERALL, SERVING, HealthState

SERVICE_NAME = smoke_pb2.DESCRIPTOR.services_by_name["SmokeService"].full_name

OK_MESSAGE = "PetSage services are running smoothly!"


class SmokeServicer(smoke_pb2_grpc.SmokeServiceServicer):
    """Answers SmokeTest from the health state; never waits on anything."""

    def __init__(self, state: HealthState, started: float | None = None) -> None:
        self._state = state
        self._started = time.monotonic() if started is None else started

    async def SmokeTest(
        self, request: smoke_pb2.SmokeTestRequest, context: grpc.aio.ServicerContext
    ) -> smoke_pb2.SmokeTestResponse:
        response = smoke_pb2.SmokeTestResponse(version=__version__)
        response.uptime.FromNanoseconds(int((time.monotonic() - self._started) * 1e9))
        if self._state.get(OVERALL) == SERVING:
            response.status = smoke_pb2.SMOKE_STATUS_OK
            response.message = OK_MESSAGE
        else:
            response.status = smoke_pb2.SMOKE_STATUS_FAILING
            response.message = (
                "PetSage is shutting down" if self._state.is_shutdown else "PetSage is not serving"
            )
        return response
