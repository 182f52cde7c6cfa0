"""`python -m forgerytalker.cli ...` runs the `forgerytalker` command line."""

from . import console_main

console_main()
