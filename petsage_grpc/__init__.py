"""PetSage gRPC: the health and smoke-test service of the PetSage platform."""

__version__ = "0.1.0"
