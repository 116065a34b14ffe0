"""Kiln's themes: ``.tcss`` files and theme definitions, shipped as package data."""
