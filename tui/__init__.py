"""Kiln's Textual workbench. It imports ``kiln.engine``; ``kiln.engine`` never imports it."""
