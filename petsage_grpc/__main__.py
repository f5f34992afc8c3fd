"""`python -m petsage_grpc` runs the same CLI as `petsage-grpc`."""

import sys

from petsage_grpc.cli import main

sys.exit(main())
