"""``python -m ppgen``: the same as the ``ppgen`` command."""

import sys

from .cli import main

sys.exit(main())
