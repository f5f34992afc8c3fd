"""`python -m petsage_grpc` runs the same program as `petsage-grpc`."""

from petsage_grpc.launch import run

run()
