"""`python -m lmg.server.cli ...` is the `lmg` command (used to start worker processes)."""

import sys

from lmg.server.cli import main

sys.exit(main())
