"""Kiln's Textual workbench. It imports ``engine``; ``engine`` never imports it."""
