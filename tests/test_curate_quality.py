"""The curation session's quality flags: judged rows, the ``flag:`` filter, the rebalance's preference."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from kiln.engine.analysis.measure import ImageAnalysis
from kiln.engine.analysis.quality import BLURRY, DUPLICATE, judge_dataset
from kiln.engine.curate import Curation, split_query

SHARP = {"sharpness": 500.0, "entropy": 7.0, "clipped_dark": 0.0, "clipped_bright": 0.0}


def analysis(white: float, **figures: float | str) -> ImageAnalysis:
    return ImageAnalysis(white, 100 - white, metrics={**SHARP, **figures})


def curation_of(make_dataset: Callable[..., Path], whites: dict[str, float]) -> Curation:
    curation = Curation(make_dataset(whites))
    for path, white in whites.items():
        curation.set_analysis(path, analysis(white))
    return curation


def test_split_query_separates_flag_terms_from_text() -> None:
    assert split_query("flag:blurry pot") == ("pot", ["blurry"])
    assert split_query("red  vase FLAG:Dup flag:") == ("red  vase", ["dup", "any"])
    assert split_query("no flags here") == ("no flags here", [])


def test_apply_quality_gives_rows_their_flags_and_reports_changes(make_dataset) -> None:
    curation = curation_of(make_dataset, {"10_a/1.png": 50.0, "10_a/2.png": 50.0})
    curation.set_analysis("10_a/2.png", analysis(50.0, sharpness=3.0))
    changed = curation.apply_quality(curation.judge_quality())
    assert changed == ["10_a/2.png"]
    assert curation.rows["10_a/2.png"].flag_ids == [BLURRY]
    assert curation.rows["10_a/1.png"].flags == ()
    assert curation.flag_counts() == {BLURRY: 1}
    assert curation.apply_quality(curation.judge_quality()) == []  # nothing new


def test_flag_filter_keeps_flagged_rows_and_combines_with_text(make_dataset) -> None:
    curation = curation_of(make_dataset, {"10_a/pot.png": 50.0, "10_a/hill.png": 50.0, "10_a/sky.png": 50.0})
    curation.set_analysis("10_a/pot.png", analysis(50.0, sharpness=3.0))
    curation.set_analysis("10_a/sky.png", analysis(50.0, sharpness=4.0))
    curation.apply_quality(curation.judge_quality())
    assert curation.matching("flag:blurry") == ["10_a/pot.png", "10_a/sky.png"]
    assert curation.matching("flag:blur sky") == ["10_a/sky.png"]  # an id's prefix is enough
    assert curation.matching("flag:any") == ["10_a/pot.png", "10_a/sky.png"]
    assert curation.matching("flag:duplicate") == []
    assert curation.matching("hill") == ["10_a/hill.png"]


def test_rebalance_prefers_dropping_the_judged_flagged_image_on_a_tie(make_dataset) -> None:
    whites = {
        "10_a/a.png": 90.0,
        "10_a/b.png": 90.0,
        "10_a/c.png": 50.0,
        "10_a/d.png": 50.0,
        "10_a/e.png": 50.0,
    }
    curation = curation_of(make_dataset, whites)
    # Dropping either 90% image lands on 60; without flags the path decides (a).
    assert curation.rebalance().exclude == ("10_a/a.png",)
    curation.set_analysis("10_a/b.png", analysis(90.0, sharpness=3.0))
    # The solver judges the figures itself: no "flags" key in the metrics is needed.
    assert curation.rebalance().exclude == ("10_a/b.png",)


def test_rebalance_judges_duplicates_among_included_images_only(make_dataset) -> None:
    twin = {"phash": "f0f0f0f0f0f0f0f0", "phash_mirror": "0f0f0f0f0f0f0f0f"}
    whites = {
        "10_a/a.png": 90.0,
        "10_a/b.png": 90.0,
        "10_a/c.png": 50.0,
        "10_a/d.png": 50.0,
        "10_a/x.png": 50.0,
    }
    curation = curation_of(make_dataset, whites)
    curation.set_analysis("10_a/b.png", analysis(90.0, **twin))
    curation.set_analysis("10_a/x.png", analysis(50.0, sharpness=600.0, **twin))  # the sharper original
    assert judge_dataset(curation.quality_metrics()).images["10_a/b.png"].flag_ids == [DUPLICATE]
    assert curation.rebalance().exclude == ("10_a/b.png",)
    # With its twin excluded, b is no duplicate: 90/90/50/50 needs one 90 dropped, a by path.
    curation.set_included(["10_a/x.png"], False)
    assert curation.rebalance().exclude == ("10_a/a.png",)


def test_gauge_leaves_out_images_kohya_skips_and_counts_them_once_their_folder_is_renamed(
    make_dataset,
) -> None:
    curation = curation_of(make_dataset, {"10_pot/a.png": 40.0, "pots/b.png": 20.0, "loose.png": 10.0})
    summary = curation.summary()
    assert summary.images == 1 and summary.white == pytest.approx(40.0)
    assert summary.effective_white == pytest.approx(40.0)
    assert not curation.rows["pots/b.png"].counted and curation.rows["pots/b.png"].included
    (curation.root / "pots").rename(curation.root / "5_pots")
    curation.rescan(moves={"pots/b.png": "5_pots/b.png"})
    curation.set_analysis("5_pots/b.png", analysis(20.0))
    summary = curation.summary()
    assert summary.images == 2 and summary.white == pytest.approx(30.0)
    assert summary.effective_white == pytest.approx((40.0 * 10 + 20.0 * 5) / 15)
