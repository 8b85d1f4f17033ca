"""Test-session settings.

The store of exported programs (`sensitivity/export_store.py`) outlives a process, so a
second run of the suite would load programs instead of tracing them, and tests that count
traces or compiles would see a warm store left by the first run. The suite turns it off;
tests/test_export_store.py turns it back on, in a temporary cache folder, where it tests it.
JAX's own persistent compile cache stays on (it does not skip tracing).
"""

import os

os.environ["SENSITIVITY_NO_EXPORT_STORE"] = "1"
