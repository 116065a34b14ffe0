"""The image protocols a preview can use (``kiln --images``): a light module, so the CLI's
parser can offer them without importing Textual."""

from __future__ import annotations

IMAGE_MODES = ("auto", "tgp", "sixel", "halfcell", "unicode", "none")
