"""Kiln: a terminal workbench for training Stable Diffusion LoRAs over SSH.

The wheel installs the repository's folders under this one import name: ``kiln.engine``
(everything headless), ``kiln.cli`` (the ``kiln`` command), ``kiln.tui`` (the Textual app)
and ``kiln.themes``. See docs/architecture.md.
"""

__version__ = "0.1.0"
