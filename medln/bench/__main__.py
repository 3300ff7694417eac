"""`python -m medln.bench ...`: the bench command alone (a device machine may lack the other
commands' dependencies)."""

import sys

from .command import main

sys.exit(main())
