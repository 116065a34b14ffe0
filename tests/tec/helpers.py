"""Helpers for the TEC meter tests."""

from __future__ import annotations

import json

import pytest


def cli_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    """Run ``kiln tec ... --json`` in-process and parse its output."""
    from kiln.cli import main

    assert main(["tec", *args, "--json"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)
