"""One GPU per sweep job: the device pool, ``--gpus`` against the visible devices, the queue with
a fake set of devices (each job's environment, queueing, a failed job freeing its GPU), (the
environment a real detached launch hands its process: tests/train/test_sweep_gpu_launch.py)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import pytest
from kiln.engine.errors import ConfigError
from kiln.engine.runs.gpus import GpuPool, choose_gpus, parse_gpus, visible_gpus
from kiln.engine.runs.sweep import create_sweep, load_sweep, read_sweep_record, run_queue
from kiln.engine.runs.sweep_report import sweep_report

from tests.watch.test_sweep_plan import FakeRuns, fake_run, write


def sweep_of(tmp_path: Path, runs: int) -> Path:
    seeds = ", ".join(str(seed) for seed in range(1, runs + 1))
    return create_sweep(load_sweep(write(tmp_path, f'base = "run.toml"\n[grid]\n"train.seed" = [{seeds}]\n')))


class DeviceRuns(FakeRuns):
    """Fake runs that remember which device each took and check no two share one."""

    def __init__(self, sweep_dir: Path, **kwargs) -> None:
        super().__init__(sweep_dir, **kwargs)
        self.device_of: dict[Path, str | None] = {}
        self.shared: list[str] = []
        self.failing: set[int] = set()

    def running(self) -> list[Path]:
        return [path for path, reads in self.reads.items() if reads < self.reads_to_finish]

    def launch(self, config: Path, env: Mapping[str, str]) -> Path:
        device = env.get("CUDA_VISIBLE_DEVICES")
        if device is not None and device in {self.device_of.get(p) for p in self.running()}:
            self.shared.append(device)
        run_dir = super().launch(config, env)
        self.device_of[run_dir] = device
        return run_dir

    def state(self, run_dir: Path) -> str:
        state = super().state(run_dir)
        if int(run_dir.name.rpartition("-")[2]) in self.failing:
            self.reads[run_dir] = self.reads_to_finish  # ended
            return "failed"
        return state


# ---------------------------------------------------------------- the pool and the choice


def test_the_pool_hands_each_device_to_one_job_until_it_is_released() -> None:
    pool = GpuPool(["0", "2"])
    assert pool.capacity(4) == 2 and pool.capacity(1) == 1
    assert [pool.take(), pool.take(), pool.take()] == ["0", "2", None]
    pool.release("2")
    assert pool.take() == "2"
    pool.release(None)  # a job without a device
    assert pool.busy() == {"0": 1, "2": 1}


def test_a_sharing_pool_puts_the_next_job_on_the_least_busy_device() -> None:
    pool = GpuPool(["0", "1"], share=True)
    assert pool.capacity(5) == 5
    assert [pool.take() for _ in range(5)] == ["0", "1", "0", "1", "0"]
    pool.release("1")
    assert pool.take() == "1"


def test_no_devices_pins_nothing() -> None:
    pool = GpuPool([])
    assert not pool and pool.capacity(3) == 3 and pool.take() is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [("2,3", ("2", "3")), ("", ()), ("-1", ()), ("0,-1,2", ("0",)), ("GPU-ab12-cd", ("GPU-ab12-cd",))],
)
def test_visible_gpus_reads_cuda_visible_devices_as_cuda_does(value: str, expected: tuple[str, ...]) -> None:
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": value}, count=8) == expected


def test_visible_gpus_counts_the_devices_when_nothing_hides_them() -> None:
    assert visible_gpus({}, count=3) == ("0", "1", "2")
    assert visible_gpus({}, count=0) == ()


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "give device numbers"),
        ("0,x", "'x' is not a GPU number"),
        ("1,1", "GPU 1 is named twice"),
    ],
)
def test_bad_gpu_lists_are_one_line_errors(text: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        parse_gpus(text)


def test_gpus_count_among_the_visible_devices() -> None:
    visible = ("4", "5", "6")
    assert choose_gpus("0,2", 3, visible) == ("4", "6")
    assert choose_gpus(None, 3, visible) == visible
    assert choose_gpus(None, 1, visible) == ()  # one at a time: nothing pinned, as kiln train
    assert choose_gpus("GPU-1a2b", 2, visible) == ("GPU-1a2b",)
    with pytest.raises(ConfigError, match=r"no GPU 3 here \(3 visible: 0, 1, 2\)"):
        choose_gpus("3", 2, visible)
    with pytest.raises(ConfigError, match="no GPU is visible here"):
        choose_gpus("0", 2, ())


# ---------------------------------------------------------------- the queue with fake devices


def test_each_job_gets_its_own_gpu_and_the_rest_queue(tmp_path: Path) -> None:
    sweep_dir = sweep_of(tmp_path, 5)
    fake = DeviceRuns(sweep_dir, reads_to_finish=3)
    record = run_queue(sweep_dir, parallel=4, hooks=fake.hooks(), poll_seconds=0, gpus=("0", "2"))
    assert fake.most_at_once == 2  # 4 asked for, 2 GPUs: the other jobs waited
    assert fake.shared == []
    assert all(set(env) == {"CUDA_VISIBLE_DEVICES"} for env in fake.envs)
    assert [env["CUDA_VISIBLE_DEVICES"] for env in fake.envs[:2]] == ["0", "2"]
    assert [entry["state"] for entry in record["runs"]] == ["done"] * 5
    saved = read_sweep_record(sweep_dir)["runs"]
    assert [entry["gpu"] for entry in saved] == [env["CUDA_VISIBLE_DEVICES"] for env in fake.envs]
    for number in range(1, 6):
        fake_run(sweep_dir, f"run-{number}", [0.5, 0.4])
    rows = sweep_report(sweep_dir, cook=False, state_of=lambda path: "done").rows
    assert [row.gpu for row in rows] == [entry["gpu"] for entry in saved]


def test_a_job_that_fails_to_start_or_fails_frees_its_gpu(tmp_path: Path) -> None:
    sweep_dir = sweep_of(tmp_path, 4)
    fake = DeviceRuns(sweep_dir, fail={1})  # run 1 cannot start
    fake.failing = {2}  # run 2 starts, then fails
    record = run_queue(sweep_dir, parallel=2, hooks=fake.hooks(), poll_seconds=0, gpus=("7",))
    assert [entry["state"] for entry in record["runs"]] == ["failed", "failed", "done", "done"]
    assert [env["CUDA_VISIBLE_DEVICES"] for env in fake.envs] == ["7"] * 4  # the one GPU, each time
    assert fake.most_at_once == 1 and fake.shared == []


def test_sharing_lets_parallel_jobs_onto_one_gpu(tmp_path: Path) -> None:
    sweep_dir = sweep_of(tmp_path, 3)
    fake = DeviceRuns(sweep_dir, reads_to_finish=4)
    run_queue(sweep_dir, parallel=2, hooks=fake.hooks(), poll_seconds=0, gpus=("0",), share_gpus=True)
    assert fake.most_at_once == 2 and fake.shared[:1] == ["0"]


def test_without_gpus_nothing_is_pinned(tmp_path: Path) -> None:
    sweep_dir = sweep_of(tmp_path, 2)
    fake = DeviceRuns(sweep_dir)
    record = run_queue(sweep_dir, parallel=2, hooks=fake.hooks(), poll_seconds=0)
    assert fake.envs == [{}, {}] and all("gpu" not in entry for entry in record["runs"])


def test_a_resumed_queue_keeps_the_running_jobs_gpu_booked(tmp_path: Path) -> None:
    sweep_dir = sweep_of(tmp_path, 2)
    running = sweep_dir / "run-1"
    running.mkdir()
    record = read_sweep_record(sweep_dir)
    record["runs"][0].update(state="running", run_dir="run-1", gpu="0")
    (sweep_dir / "sweep.json").write_text(json.dumps(record))
    fake = DeviceRuns(sweep_dir)
    fake.reads[running] = 0
    run_queue(sweep_dir, parallel=2, hooks=fake.hooks(), poll_seconds=0, gpus=("0", "1"))
    assert fake.envs == [{"CUDA_VISIBLE_DEVICES": "1"}]
