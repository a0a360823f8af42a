"""``python -m skconv``: the ``skconv`` command."""

import sys

from .cli import main

sys.exit(main())
