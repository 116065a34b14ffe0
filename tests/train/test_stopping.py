"""Signals stop a run after the step; a quick second one stops at once, even out of a sleep."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from kiln.engine.runs.stopping import StopSignals


def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.01)


def test_first_signal_requests_a_stop_and_a_quick_second_interrupts_the_main_thread() -> None:
    stop = threading.Event()
    messages: list[str] = []
    previous = signal.getsignal(signal.SIGTERM)
    with StopSignals(stop.set, on_message=messages.append, window=5.0, grace=30.0) as signals:
        os.kill(os.getpid(), signal.SIGTERM)
        wait_for(stop.is_set)
        assert stop.is_set() and "stopping after the current step" in messages[0]
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(10)  # a long call in the main thread: the abort must wake it
        assert time.monotonic() - started < 3
        assert signals.aborting and "stopping at once" in messages[-1]
    assert signal.getsignal(signal.SIGTERM) == previous


def test_a_second_signal_after_the_window_rearms_instead_of_aborting() -> None:
    stops: list[int] = []
    messages: list[str] = []
    with StopSignals(lambda: stops.append(1), on_message=messages.append, window=0.2, grace=30.0) as signals:
        signals.signal_received(signal.SIGTERM)
        time.sleep(0.3)
        signals.signal_received(signal.SIGTERM)
        assert not signals.aborting and stops == [1] and "still stopping" in messages[-1]
        with pytest.raises(KeyboardInterrupt):
            signals.signal_received(signal.SIGTERM)  # within 0.2 s of the previous one
            time.sleep(5)
        assert signals.aborting


def test_install_outside_the_main_thread_changes_nothing() -> None:
    result: list[bool] = []
    before = signal.getsignal(signal.SIGINT)
    thread = threading.Thread(target=lambda: result.append(StopSignals(lambda: None).install()))
    thread.start()
    thread.join()
    assert result == [False] and signal.getsignal(signal.SIGINT) == before
