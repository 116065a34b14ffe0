"""Helpers for the TEC meter tests (the tiny models are session fixtures in ``tests/conftest.py``)."""

from __future__ import annotations

import json

import pytest
import torch

# The tiny model's ops are microseconds long; extra threads only add contention on 2 cores.
torch.set_num_threads(1)


def cli_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    """Run ``kiln tec ... --json`` in-process and parse its output."""
    from kiln.cli import main

    assert main(["tec", *args, "--json"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)
