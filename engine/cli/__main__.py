"""``python -m engine.cli`` is ``kiln``."""

import sys

from engine.cli import main

sys.exit(main())
