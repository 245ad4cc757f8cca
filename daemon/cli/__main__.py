"""`python -m daemon.cli`: the `hotshot` command."""

import sys

from daemon.cli import main

sys.exit(main())
