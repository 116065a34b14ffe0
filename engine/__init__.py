"""Kiln's engine: everything that is not drawing, importable and testable headless."""

__version__ = "0.1.0"
