"""Short texts for a run's figures: durations, losses, rates, sparklines, start times.

Shared by ``kiln watch`` and the TUI's runs section, so both say the same thing the same way.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

SPARK_CHARS = "▁▂▃▄▅▆▇█"
MISSING = "-"


def duration(seconds: float | None) -> str:
    """``42s``, ``9m12s``, ``3h05m``, ``2d04h``; ``-`` when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return MISSING
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def loss_text(value: float | None) -> str:
    """A loss with 4 significant decimals, ``-`` when unknown."""
    if value is None or not math.isfinite(value):
        return MISSING
    return f"{value:.4f}"


def rate_text(it_s: float | None) -> str:
    """Steps per second; slow runs read better as seconds per step."""
    if it_s is None or it_s <= 0 or not math.isfinite(it_s):
        return MISSING
    if it_s < 1:
        return f"{1 / it_s:.1f}s/it"
    return f"{it_s:.2f}it/s"


def lr_text(value: float | None) -> str:
    """``1.0e-04``."""
    if value is None:
        return MISSING
    return f"{value:.1e}"


def started_text(stamp: float | None, now: float | None = None) -> str:
    """``14:05`` today, ``Mar 03 14:05`` on another day, ``-`` when unknown."""
    if stamp is None:
        return MISSING
    now = time.time() if now is None else now
    local = time.localtime(stamp)
    if time.strftime("%Y%m%d", local) == time.strftime("%Y%m%d", time.localtime(now)):
        return time.strftime("%H:%M", local)
    return time.strftime("%b %d %H:%M", local)


def progress_text(step: int, total: int) -> str:
    """``120/800 15%`` (just the step when the total is not known yet)."""
    if total <= 0:
        return str(step) if step else MISSING
    return f"{step}/{total} {100 * step // total}%"


def sparkline(values: Sequence[float], width: int) -> str:
    """The values as ``width`` block characters (each the mean of its share of the values).

    Low is ``▁``, high is ``█``, scaled between the shown minimum and maximum; a flat series
    is a flat line. Fewer values than ``width`` give a shorter line.
    """
    if width <= 0 or not values:
        return ""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return ""
    buckets = min(width, len(finite))
    means = []
    for index in range(buckets):
        start = index * len(finite) // buckets
        end = max(start + 1, (index + 1) * len(finite) // buckets)
        chunk = finite[start:end]
        means.append(sum(chunk) / len(chunk))
    low, high = min(means), max(means)
    if high - low <= 1e-12:
        return SPARK_CHARS[len(SPARK_CHARS) // 2] * buckets
    top = len(SPARK_CHARS) - 1
    return "".join(SPARK_CHARS[round((value - low) / (high - low) * top)] for value in means)


def event_text(event: dict | None) -> str:
    """One line saying what an event reports (the latest-event line of ``kiln watch``)."""
    if not event:
        return "no event yet"
    kind = event.get("type", "?")
    if kind == "step":
        return f"step {event.get('step')} loss {loss_text(_number(event.get('loss')))}"
    if kind == "epoch":
        return f"epoch {event.get('epoch')} ended, mean loss {loss_text(_number(event.get('loss')))}"
    if kind == "validation":
        return f"validation loss {loss_text(_number(event.get('loss')))} (epoch {event.get('epoch')})"
    if kind == "sample":
        files = event.get("files") or []
        return f"{len(files)} sample(s) for epoch {event.get('epoch')}"
    if kind == "checkpoint":
        path = str(event.get("path") or "")
        return f"saved {path.rsplit('/', 1)[-1]}"
    if kind == "warning":
        return f"warning: {event.get('message', '')}"
    if kind == "start":
        images, total, device = event.get("images", "?"), event.get("total", "?"), event.get("device", "?")
        return f"started: {images} images, {total} steps on {device}"
    if kind == "done":
        return f"done at step {event.get('step')}"
    if kind == "failed":
        return f"failed: {event.get('error', '')}"
    if kind == "cancelled":
        return f"cancelled at step {event.get('step')}"
    return str(kind)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


# How tables name a run's model family (short: a column of its own).
FAMILY_LABELS = {"sd15": "SD1.5", "sdxl": "SDXL"}
NETWORK_LABELS = {"locon": "LoCon", "loha": "LoHa", "lokr": "LoKr", "dora": "DoRA"}


def family_text(family: str | None, network: str | None = None) -> str:
    """``SD1.5`` / ``SDXL`` for a run's family, with its network when not plain LoRA
    (``SDXL LoKr``); ``-`` before the trainer has loaded the model."""
    if not family:
        return "-"
    text = FAMILY_LABELS.get(family, family)
    return f"{text} {NETWORK_LABELS[network]}" if network in NETWORK_LABELS else text


def memory_text(peak_mb: float | None, kind: str | None, estimate_mb: float | None = None) -> str:
    """``peak 3.2 GB VRAM`` / ``peak 812 MB RAM`` for the run view and ``kiln watch``, with the
    trainer's estimate (``est. 3.4 GB``) when it made one; "" when neither is known."""
    where = "VRAM" if kind == "vram" else "RAM"
    estimate = "est. {} {}B".format(*_size(estimate_mb)) if estimate_mb is not None else ""
    if peak_mb is None:
        return f"{estimate} {where}" if estimate else ""
    number, unit = _size(peak_mb)
    return f"peak {number} {unit}B {where}" + (f" ({estimate})" if estimate else "")


def memory_cell(peak_mb: float | None) -> str:
    """A peak in a table cell: ``812M``, ``3.2G``, ``-`` when unknown."""
    return "-" if peak_mb is None else "".join(_size(peak_mb))


def _size(mib: float) -> tuple[str, str]:
    """MiB as a short number and its unit letter: ``("812", "M")``, ``("3.2", "G")``."""
    return (f"{mib / 1024:.1f}", "G") if mib >= 1024 else (f"{mib:.0f}", "M")
