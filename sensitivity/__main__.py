"""`python -m sensitivity ...`: the same as the `sensitivity` command."""

from .app.startup import console_main

console_main()
