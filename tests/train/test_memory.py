"""Peak memory: the reading on a CPU follows what the process really holds, and the runs
table, the run view and ``kiln watch`` show it from ``status.json``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from kiln.engine.runs.events import EventWriter
from kiln.engine.runs.folders import read_run
from kiln.engine.runs.readout import memory_cell, memory_text
from kiln.engine.train.report import RunReport
from kiln.tui.widgets.run_table import COLUMNS, run_cells

MEASURE = """
import json, torch
from kiln.engine.train.memory import peak_memory
before = peak_memory(torch.device("cpu"))
status = open("/proc/self/status").read().splitlines()
resident = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024
block = torch.ones(256 * 2**20 // 4)  # 256 MiB, touched
after = peak_memory(torch.device("cpu"))
print(json.dumps([before, after, resident]))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmRSS from Linux's /proc")
def test_the_cpu_peak_grows_by_what_the_process_allocates() -> None:
    out = subprocess.run([sys.executable, "-c", MEASURE], capture_output=True, text=True, check=True).stdout
    before, after, resident = json.loads(out)
    assert before["memory"] == after["memory"] == "ram"
    # The peak is a maximum: at least what is resident now plus the block, and no more than the
    # earlier peak plus the block (imports may have peaked above what stayed resident).
    assert resident + 256 * 0.95 < after["peak_mb"] < max(before["peak_mb"], resident) + 256 * 1.1


@pytest.mark.parametrize(
    ("peak", "kind", "cell", "text"),
    [
        (None, None, "-", ""),
        (812.4, "ram", "812M", "peak 812 MB RAM"),
        (3276.8, "vram", "3.2G", "peak 3.2 GB VRAM"),
    ],
)
def test_peak_wording(peak, kind, cell: str, text: str) -> None:
    assert memory_cell(peak) == cell
    assert memory_text(peak, kind) == text


def test_the_estimate_shows_beside_the_peak_and_alone_before_the_first_step() -> None:
    assert memory_text(3276.8, "vram", 3481.6) == "peak 3.2 GB VRAM (est. 3.4 GB)"
    assert memory_text(None, "vram", 3481.6) == "est. 3.4 GB VRAM"
    assert memory_text(None, None, None) == ""


def test_a_step_report_carries_the_peak_into_the_status_and_the_runs_table(tmp_path: Path) -> None:
    writer = EventWriter(tmp_path / "run", name="pot", heartbeat_s=0)
    report = RunReport(writer, None, "pot")
    report.emit("start", total=10)
    report.step(
        step=1,
        total=10,
        epoch=1,
        loss=0.2,
        lrs=[1e-4],
        seconds=0.5,
        memory={"peak_mb": 5120.0, "memory": "vram"},
    )
    writer.close()
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert (status["peak_mb"], status["memory"]) == (5120.0, "vram")
    info = read_run(tmp_path / "run")
    assert (info.peak_mb, info.memory) == (5120.0, "vram")
    cells = run_cells(info)
    assert str(cells[COLUMNS.index("peak")]) == "5.0G"


def test_the_running_peak_never_falls_when_the_kernels_high_water_mark_does(monkeypatch) -> None:
    """VmHWM can read a little lower than before after malloc_trim's madvise (the kernel raises it
    only on unmapping): the step events' peak stays the largest reading so far."""
    import torch
    from kiln.engine.train import memory

    readings = iter([900.0, 947.5, 947.3, 950.0])
    memory.begin_run_peak(torch.device("cpu"))
    monkeypatch.setattr(memory, "peak_rss_bytes", lambda: int(next(readings) * memory.MIB))
    read = [memory.peak_memory(torch.device("cpu"))["peak_mb"] for _ in range(4)]
    assert read == [900.0, 947.5, 947.5, 950.0]


HIDDEN = """
import json, torch
from kiln.engine.train import memory
device = torch.device("cpu")
memory.begin_run_peak(device)
block = torch.ones(256 * 2**20 // 4)  # 256 MiB, touched: the set-up's peak (caching, say)
with_block = memory.peak_memory(device)["peak_mb"]
del block
meter = memory.PeakMeter(device)
meter.start()  # the memory probe's reset
after = memory.peak_memory(device)["peak_mb"]
print(json.dumps([with_block, after, memory.run_peak_bytes()["cpu"] / 2**20]))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from Linux's /proc")
def test_the_probes_reset_hides_no_peak_from_the_run() -> None:
    """The memory probe resets the counters after loading and caching, which can be the run's
    peak: every reading after it still covers them."""
    out = subprocess.run([sys.executable, "-c", HIDDEN], capture_output=True, text=True, check=True).stdout
    with_block, after_reset, hidden = json.loads(out)
    assert after_reset >= with_block - 1 and hidden >= with_block - 1
