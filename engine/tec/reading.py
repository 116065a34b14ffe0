"""The TEC reading ("close to zero", "mild", "heavy") and its provisional thresholds, torch-free.

Kept apart from ``kiln.engine.tec.measures`` so the TUI can state the thresholds (and band its
chart) without importing torch. The bands were set on reasoning about the scale of the
measure, not yet calibrated on a collection of real checkpoints.
"""

from __future__ import annotations

# Score below the first bound and confusion below the first share reads "close to zero";
# below the second bounds "mild"; else "heavy".
SCORE_BANDS = (1.0, 5.0)
CONFUSION_BANDS = (0.005, 0.05)
READINGS = ("close to zero", "mild", "heavy")
THRESHOLDS_NOTE = (
    "provisional thresholds: close to zero = score < 1 and confusion < 0.5%; "
    "mild = score < 5 and confusion < 5%; heavy above"
)


def tec_reading(score: float, confusion_rate: float) -> str:
    """The provisional reading: the worse of the score's band and the confusion's band."""
    score_band = sum(score >= bound for bound in SCORE_BANDS)
    confusion_band = sum(confusion_rate >= bound for bound in CONFUSION_BANDS)
    return READINGS[max(score_band, confusion_band)]
