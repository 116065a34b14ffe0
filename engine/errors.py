"""One exception hierarchy for Kiln, so the CLI and the TUI can show any failure as one line.

Every message names the file or setting at fault and says how to fix it.
"""

from __future__ import annotations


class KilnError(Exception):
    """Base class for errors a user can act on; the CLI prints them as one line and exits 1."""


class UsageError(KilnError):
    """A bad argument or value given by the user; the CLI exits 2."""


class DatasetError(KilnError):
    """The dataset folder is missing, empty or unreadable."""


class ImageError(KilnError):
    """An image could not be decoded; carried per image, never fatal for a scan."""


class ConfigError(UsageError):
    """A configuration file holds an unknown key or a bad value."""


class ModelError(KilnError):
    """A model folder or checkpoint is missing, incomplete or of an unsupported kind."""


class RunError(KilnError):
    """A training run folder is missing, finished or in a state that forbids the action."""
