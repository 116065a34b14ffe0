"""Kohya's aspect buckets: the bucket list, image assignment in both modes, spec validation."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kiln.engine.errors import ImageError, UsageError
from kiln.engine.plan.buckets import BucketAssignment, BucketSpec, assign_bucket, bucket_resolutions

# sd-scripts' make_bucket_resolutions((512, 512)) with its defaults (256, 1024, 64).
KOHYA_512 = [
    (256, 832), (256, 896), (256, 960), (256, 1024), (320, 704), (320, 768), (384, 640), (448, 576),
    (512, 512),
    (576, 448), (640, 384), (704, 320), (768, 320), (832, 256), (896, 256), (960, 256), (1024, 256),
]  # fmt: skip


def test_kohyas_bucket_list_at_512_has_17_sorted_buckets() -> None:
    assert bucket_resolutions(BucketSpec(resolution=512)) == KOHYA_512
    assert len(KOHYA_512) == 17


def test_every_bucket_stays_within_the_area_and_the_size_limits() -> None:
    for spec in (BucketSpec(768), BucketSpec((512, 768)), BucketSpec(640, min_size=320, max_size=960)):
        buckets = bucket_resolutions(spec)
        assert buckets == sorted(set(buckets))
        for width, height in buckets:
            assert width * height <= spec.area
            assert spec.min_bucket <= min(width, height) and max(width, height) <= spec.max_bucket
            assert width % spec.step == 0 and height % spec.step == 0
            assert (height, width) in buckets


def test_non_square_resolution_uses_its_area() -> None:
    buckets = bucket_resolutions(BucketSpec(resolution=(512, 768)))
    assert (576, 576) in buckets  # floor(sqrt(512 * 768) / 64) * 64
    assert (512, 768) in buckets and (768, 512) in buckets
    assert BucketSpec(resolution=[512, 768]) == BucketSpec(resolution=(512, 768))  # lists from TOML
    assert BucketSpec(resolution=(512, 768)).target_size == (512, 768)
    assert BucketSpec(resolution=512).target_size == (512, 512)


@pytest.mark.parametrize(
    ("size", "bucket", "resized", "crop"),
    [
        ((1200, 800), (640, 384), (640, 427), (0, 21)),  # the example
        ((800, 1200), (384, 640), (427, 640), (21, 0)),
        ((1920, 1080), (640, 384), (683, 384), (21, 0)),
        ((700, 500), (576, 448), (627, 448), (25, 0)),
        ((1024, 1024), (512, 512), (512, 512), (0, 0)),
        ((100, 100), (512, 512), (512, 512), (0, 0)),  # small images are upscaled
        ((300, 200), (640, 384), (640, 427), (0, 21)),
        ((4000, 1000), (1024, 256), (1024, 256), (0, 0)),
        ((640, 384), (640, 384), (640, 384), (0, 0)),  # already a bucket's size
    ],
)
def test_assignment_with_upscaling(size, bucket, resized, crop) -> None:
    assert assign_bucket(size, BucketSpec(512)) == BucketAssignment(bucket, resized, crop)


@pytest.mark.parametrize(
    ("size", "bucket", "resized", "crop"),
    [
        ((1200, 800), (576, 384), (576, 384), (0, 0)),  # the example
        ((800, 1200), (384, 576), (384, 576), (0, 0)),
        ((1920, 1080), (640, 384), (683, 384), (21, 0)),
        ((700, 500), (512, 384), (538, 384), (13, 0)),
        ((3000, 3000), (512, 512), (512, 512), (0, 0)),
        ((300, 200), (256, 192), (300, 200), (22, 4)),  # small: kept, floored to the step
        ((100, 100), (64, 64), (100, 100), (18, 18)),
    ],
)
def test_assignment_without_upscaling(size, bucket, resized, crop) -> None:
    assert assign_bucket(size, BucketSpec(512, no_upscale=True)) == BucketAssignment(bucket, resized, crop)


def test_no_upscale_refuses_images_below_one_step() -> None:
    with pytest.raises(ImageError, match="no_upscale"):
        assign_bucket((50, 300), BucketSpec(512, no_upscale=True))
    with pytest.raises(ImageError, match="too thin"):
        assign_bucket((100_000, 10), BucketSpec(512, no_upscale=True))
    assert assign_bucket((50, 300), BucketSpec(512)).bucket == (256, 1024)
    with pytest.raises(ImageError):
        assign_bucket((0, 300), BucketSpec(512))


@given(st.integers(1, 6000), st.integers(1, 6000), st.sampled_from([512, 768, (512, 768)]))
@settings(max_examples=300, deadline=None)
def test_upscaling_covers_the_nearest_ratio_bucket_and_crops_centred(width, height, resolution) -> None:
    spec = BucketSpec(resolution)
    buckets = bucket_resolutions(spec)
    result = assign_bucket((width, height), spec)
    assert result.bucket in buckets
    error = abs(result.bucket[0] / result.bucket[1] - width / height)
    assert all(error <= abs(w / h - width / height) for w, h in buckets)
    assert result.resized[0] >= result.bucket[0] and result.resized[1] >= result.bucket[1]
    assert min(result.resized[0] - result.bucket[0], result.resized[1] - result.bucket[1]) <= 1
    assert result.crop == (
        (result.resized[0] - result.bucket[0]) // 2,
        (result.resized[1] - result.bucket[1]) // 2,
    )


@given(st.integers(64, 6000), st.integers(64, 6000))
@settings(max_examples=300, deadline=None)
def test_no_upscale_never_enlarges_and_floors_to_the_step(width, height) -> None:
    spec = BucketSpec(512, no_upscale=True)
    try:
        result = assign_bucket((width, height), spec)
    except ImageError:
        return  # extreme ratios that shrink below one step, as Kohya cannot train either
    assert result.resized[0] <= width and result.resized[1] <= height
    assert result.bucket[0] % 64 == 0 and result.bucket[1] % 64 == 0
    assert result.resized[0] - result.bucket[0] < 64 and result.resized[1] - result.bucket[1] < 64
    if width * height <= spec.area:
        assert result.resized == (width, height)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"resolution": 0}, "resolution"),
        ({"resolution": (512,)}, "pair"),
        ({"step": 0}, "bucket_reso_steps"),
        ({"step": 60}, "multiple of 8"),
        ({"min_size": 600}, "below min_bucket_reso"),
        ({"resolution": 1280}, "above max_bucket_reso"),
        ({"min_size": 512, "max_size": 384, "resolution": 448}, "swap them"),
        ({"max_size": True}, "max_bucket_reso"),
    ],
)
def test_bad_specs_are_refused_naming_the_kohya_key(kwargs, message) -> None:
    with pytest.raises(UsageError, match=message):
        BucketSpec(**kwargs)


def test_min_and_max_are_adjusted_to_the_step_like_kohya() -> None:
    spec = BucketSpec(512, min_size=300, max_size=1000)
    assert (spec.min_bucket, spec.max_bucket) == (256, 1024)
    assert bucket_resolutions(spec) == KOHYA_512
