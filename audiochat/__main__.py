"""`python -m audiochat`: the same as the `audiochat` command (written by hand: the one module
not exported from a notebook, with the package's `__init__` files)."""
import sys

from audiochat.cli import main

sys.exit(main())
