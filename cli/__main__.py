"""``python -m kiln.cli`` is ``kiln``."""

import sys

from kiln.cli import main

sys.exit(main())
