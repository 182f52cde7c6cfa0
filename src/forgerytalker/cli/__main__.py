"""`python -m forgerytalker.cli ...` runs the `forgerytalker` command line."""

import sys

from . import main

sys.exit(main())
