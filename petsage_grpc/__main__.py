"""`python -m petsage_grpc` runs the same CLI as `petsage-grpc`."""

from petsage_grpc.cli import run

run()
