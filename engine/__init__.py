"""Kiln's engine: everything that is not drawing, importable and testable headless."""

from kiln import __version__

__all__ = ["__version__"]
