"""The documentation stays true: the generated command reference, the README's length, its
set-up commands (the ones CI runs) and every relative link."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"

# The README's two set-up commands, exactly; CI (.ci/run) runs the test one.
OPEN_COMMAND = "python3 -m venv .venv && . .venv/bin/activate && pip install -e . && kiln sample_data"
TEST_COMMAND = 'python3 -m venv .venv && . .venv/bin/activate && pip install -e ".[test]" && pytest'


_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def _code_blocks(text: str) -> list[str]:
    blocks = re.findall(r"^```(?:sh|bash)?\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    return [block.strip() for block in blocks]


def test_commands_doc_is_current():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_commands_doc.py"), "--check"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr + "run: python scripts/gen_commands_doc.py"


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; move detail into docs/"


def test_readme_starts_with_the_setup_commands():
    blocks = _code_blocks(README.read_text(encoding="utf-8"))
    assert blocks[:2] == [OPEN_COMMAND, TEST_COMMAND]


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    steps = TEST_COMMAND.split(" && ")
    # CI makes the venv and activates it on lines of their own, then runs the rest verbatim.
    assert steps[0] in ci
    assert steps[1] in ci
    assert " && ".join(steps[2:]) in ci
    # The open command sets up the same way, without the test extras.
    assert OPEN_COMMAND.split(" && ")[:2] == steps[:2]
    assert OPEN_COMMAND.split(" && ")[2:] == ["pip install -e .", "kiln sample_data"]


def test_relative_links_point_to_files():
    pages = [README, *sorted(DOCS.glob("*.md"))]
    broken = []
    for page in pages:
        text = _FENCE.sub("", page.read_text(encoding="utf-8"))
        for target in _LINK.findall(text):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue
            path = target.split("#", 1)[0]
            resolved = (page.parent / path).resolve()
            if not resolved.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_every_config_key_is_in_the_training_docs():
    from kiln.engine.train.config import SECTIONS

    text = (ROOT / "docs" / "training.md").read_text(encoding="utf-8")
    for section, cls in SECTIONS.items():
        part = text.split(f"### `[{section}]`", 1)[1].split("\n### ", 1)[0].split("\n## ", 1)[0]
        for item in fields(cls):
            assert f"| `{item.name}` |" in part, f"{section}.{item.name} is not in docs/training.md"
