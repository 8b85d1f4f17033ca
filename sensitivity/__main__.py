"""`python -m sensitivity ...`: the same as the `sensitivity` command."""

import sys

from .cli import main

sys.exit(main())
