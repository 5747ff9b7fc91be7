"""`python -m gandissect.cli ...` runs the command line (as torchrun's -m does)."""

import sys

from gandissect.cli import main

sys.exit(main())
