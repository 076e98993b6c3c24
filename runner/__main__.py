"""`python -m runner` is the `runner` console script."""

import sys

from runner.cli.main import main

sys.exit(main())
