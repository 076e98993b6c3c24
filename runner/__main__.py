"""`python -m runner` is the `runner` console script."""

import sys

from runner.cli import main

sys.exit(main())
