"""Set-up for the TEC meter tests (the tiny models are session fixtures in ``tests/conftest.py``,
the helpers are in ``tests/tec/helpers.py``)."""

from __future__ import annotations

import torch

# The tiny model's ops are microseconds long; extra threads only add contention on 2 cores.
torch.set_num_threads(1)
