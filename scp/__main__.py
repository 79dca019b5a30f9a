"""``python -m scp`` runs the ``spacing-scp`` command line."""

import sys

from scp.cli import main

sys.exit(main())
