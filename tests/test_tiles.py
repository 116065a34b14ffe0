"""The precision-method slicer: geometry, scores against siblings, safe writing, ``kiln tiles``."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import kiln.engine.tiles as tiles_module
import numpy as np
import pytest
from kiln.cli import main
from kiln.engine.errors import KilnError, UsageError
from kiln.engine.tiles import (
    Grid,
    Source,
    existing_tiles,
    load_source,
    plan_tiles,
    tile_boxes,
    tile_image,
    write_tiles,
)
from PIL import Image, ImageFilter, ImageOps

from tests.imagegen import photo_like


def coverage(size: tuple[int, int], boxes: list) -> np.ndarray:
    counts = np.zeros((size[1], size[0]), dtype=np.int32)
    for _, _, (left, top, right, bottom) in boxes:
        counts[top:bottom, left:right] += 1
    return counts


@pytest.fixture(scope="module")
def sectors_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1024 px photo whose sectors 11 and 12 (r3c3, r3c4) are blurred and blown out,
    the two the guide drops in its example."""
    pixels = np.asarray(photo_like((1024, 1024), seed=7)).copy()
    blurred = Image.fromarray(pixels[512:768, 512:768]).filter(ImageFilter.GaussianBlur(4))
    pixels[512:768, 512:768] = np.asarray(blurred)
    pixels[512:768, 768:1024] = np.clip(pixels[512:768, 768:1024].astype(np.int16) + 160, 0, 255)
    path = tmp_path_factory.mktemp("sources") / "painting.png"
    Image.fromarray(pixels).save(path, compress_level=1)
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_json(capsys: pytest.CaptureFixture, *args: str) -> dict:
    assert main(["tiles", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


# Geometry.


def test_grid_parsing() -> None:
    assert Grid.parse("4x4") == Grid(4, 4)
    assert Grid.parse(" 3 X 2 ") == Grid(3, 2)
    for bad in ("4", "0x4", "ax4", "4x-1", ""):
        with pytest.raises(UsageError, match="ROWSxCOLS"):
            Grid.parse(bad)


def test_divisible_grid_cuts_equal_tiles_numbered_from_one() -> None:
    boxes = tile_boxes((1024, 768), Grid(4, 4))
    assert [(row, col) for row, col, _ in boxes][:5] == [(1, 1), (1, 2), (1, 3), (1, 4), (2, 1)]
    assert boxes[0][2] == (0, 0, 256, 192)
    assert boxes[-1][2] == (768, 576, 1024, 768)
    assert (coverage((1024, 768), boxes) == 1).all()


def test_non_divisible_sizes_cover_every_pixel_once() -> None:
    size = (1000, 700)
    boxes = tile_boxes(size, Grid(3, 3))
    assert (coverage(size, boxes) == 1).all()
    assert [box[0] for _, col, box in boxes if _ == 1] == [0, 333, 667]
    widths = {box[2] - box[0] for _, _, box in boxes}
    heights = {box[3] - box[1] for _, _, box in boxes}
    assert max(widths) - min(widths) <= 1 and max(heights) - min(heights) <= 1


@pytest.mark.parametrize("overlap", [64, 5])
def test_overlap_makes_neighbours_share_exactly_that_many_pixels(overlap: int) -> None:
    size = (1001, 800)
    boxes = {(row, col): box for row, col, box in tile_boxes(size, Grid(2, 3), overlap)}
    assert coverage(size, list((0, 0, box) for box in boxes.values())).min() == 1
    for row in (1, 2):
        for col in (1, 2):
            assert boxes[(row, col)][2] - boxes[(row, col + 1)][0] == overlap
    assert boxes[(1, 1)][3] - boxes[(2, 1)][1] == overlap
    # The outer edges stay on the image.
    assert boxes[(1, 1)][:2] == (0, 0) and boxes[(2, 3)][2:] == size


def test_grids_that_make_tiles_under_64_px_are_refused() -> None:
    with pytest.raises(UsageError, match="at least 64 px"):
        tile_boxes((500, 1000), Grid(4, 8))
    with pytest.raises(UsageError, match="overlap"):
        tile_boxes((512, 512), Grid(2, 2), overlap=256)


# Scores.


def test_blurred_and_blown_sectors_and_only_those_are_flagged(sectors_image: Path) -> None:
    plan = plan_tiles(load_source(sectors_image), Grid(4, 4))
    flagged = {(tile.row, tile.col): tile for tile in plan.tiles if tile.low_information}
    assert set(flagged) == {(3, 3), (3, 4)}
    assert "blurry" in [flag.id for flag in flagged[(3, 3)].flags]
    assert "overexposed" in [flag.id for flag in flagged[(3, 4)].flags]
    # Scores are relative to the siblings: the good tiles lead, the two flagged trail.
    ranked = sorted(plan.tiles, key=lambda tile: tile.score)
    assert {(tile.row, tile.col) for tile in ranked[:2]} == {(3, 3), (3, 4)}
    assert max(tile.score for tile in plan.tiles) <= 1.0
    # 256 px tiles fall below the 512 training resolution.
    assert any("below the 512 px training resolution" in warning for warning in plan.warnings)
    assert not plan_tiles(load_source(sectors_image), Grid(2, 2), resolution=512).warnings


def test_tiles_are_cut_upright_from_exif_rotated_images(tmp_path: Path) -> None:
    image = photo_like((300, 200), seed=3)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "phone.png"
    image.save(path, exif=exif)
    upright = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    source = load_source(path)
    assert source.size == (200, 300)
    tile = plan_tiles(source, Grid(2, 2)).tiles[0]
    assert np.array_equal(np.asarray(tile_image(source, tile)), np.asarray(upright.crop(tile.box)))


# Writing.


def test_planning_writes_nothing_and_a_chosen_subset_is_written(sectors_image: Path, tmp_path: Path) -> None:
    out = tmp_path / "set" / "10_style"
    source = load_source(sectors_image)
    plan = plan_tiles(source, Grid(2, 2))
    assert not (tmp_path / "set").exists()
    chosen = [tile for tile in plan.tiles if tile.col == 1]
    written = write_tiles({source.path: source}, chosen, out, caption="giger style")
    assert [path.name for path in written] == ["painting_r1c1.png", "painting_r2c1.png"]
    assert sorted(p.name for p in out.iterdir()) == [
        "painting_r1c1.png",
        "painting_r1c1.txt",
        "painting_r2c1.png",
        "painting_r2c1.txt",
    ]
    assert (out / "painting_r2c1.txt").read_text(encoding="utf-8") == "giger style\n"
    with Image.open(out / "painting_r2c1.png") as tile:
        assert tile.size == (512, 512)
        assert np.array_equal(np.asarray(tile), source.pixels[512:1024, 0:512])


def test_cli_writes_every_tile_with_a_caption_and_json(sectors_image: Path, tmp_path: Path, capsys) -> None:
    before = digest(sectors_image)
    out = tmp_path / "set" / "10_giger"
    data = run_json(capsys, str(sectors_image), "--grid", "4x4", "--out", str(out))
    assert set(data) >= {"tiles"}
    assert len(data["tiles"]) == 16
    first = data["tiles"][0]
    assert {"file", "row", "col", "score", "flags", "kept"} <= set(first)
    assert (first["row"], first["col"], Path(first["file"]).name) == (1, 1, "painting_r1c1.png")
    assert all(tile["kept"] for tile in data["tiles"])
    assert {(t["row"], t["col"]) for t in data["tiles"] if t["flags"]} == {(3, 3), (3, 4)}
    assert len(list(out.glob("*.png"))) == 16 and len(list(out.glob("*.txt"))) == 16
    assert (out / "painting_r4c4.txt").read_text(encoding="utf-8") == "giger\n"  # the concept name
    assert any("below the 512 px training resolution" in warning for warning in data["warnings"])
    assert digest(sectors_image) == before


def test_drop_low_info_leaves_the_flagged_tiles_out(sectors_image: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "10_style"
    data = run_json(capsys, str(sectors_image), "--out", str(out), "--drop-low-info", "--caption", "x")
    dropped = {Path(t["file"]).name for t in data["tiles"] if not t["kept"]}
    assert dropped == {"painting_r3c3.png", "painting_r3c4.png"}
    assert len(list(out.glob("*.png"))) == 14
    assert not (out / "painting_r3c3.png").exists() and not (out / "painting_r3c3.txt").exists()


def test_existing_tiles_are_not_overwritten_without_force(
    sectors_image: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "10_style"
    assert main(["tiles", str(sectors_image), "--grid", "2x2", "--out", str(out)]) == 0
    stamp = {path.name: path.stat().st_mtime_ns for path in out.iterdir()}
    capsys.readouterr()
    assert main(["tiles", str(sectors_image), "--grid", "2x2", "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert {path.name: path.stat().st_mtime_ns for path in out.iterdir()} == stamp
    # --force replaces them; tiles of another grid that remain are named in a warning.
    data = run_json(capsys, str(sectors_image), "--grid", "1x2", "--out", str(out), "--force")
    assert len(data["tiles"]) == 2
    assert any("older tile(s)" in warning for warning in data["warnings"])
    assert len(existing_tiles(out, ["painting"])) == 4


def test_a_failed_write_leaves_nothing_behind(sectors_image: Path, tmp_path: Path, monkeypatch) -> None:
    source = load_source(sectors_image)
    plan = plan_tiles(source, Grid(2, 2))
    real = tiles_module._write_synced
    calls = []

    def failing(path: Path, data: bytes) -> None:
        calls.append(path)
        if len(calls) == 5:
            raise OSError(28, "No space left on device")
        real(path, data)

    monkeypatch.setattr(tiles_module, "_write_synced", failing)
    new = tmp_path / "10_new"
    with pytest.raises(KilnError, match="nothing was changed"):
        write_tiles({source.path: source}, plan.tiles, new)
    assert not new.exists()
    existing = tmp_path / "10_existing"
    existing.mkdir()
    (existing / "keep.png").write_bytes(b"user file")
    calls.clear()
    with pytest.raises(KilnError):
        write_tiles({source.path: source}, plan.tiles, existing)
    assert [p.name for p in existing.iterdir()] == ["keep.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["10_existing"]  # no staging folder left


def test_unreadable_image_fails_before_anything_is_written(
    sectors_image: Path, tmp_path: Path, capsys
) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png at all")
    out = tmp_path / "10_style"
    assert main(["tiles", str(sectors_image), str(broken), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "broken.png" in err and err.count("\n") == 1
    assert not out.exists()
    assert main(["tiles", str(tmp_path / "missing.png"), "--out", str(out)]) == 1
    assert "no such image file" in capsys.readouterr().err


def test_too_fine_a_grid_is_a_usage_error(sectors_image: Path, tmp_path: Path, capsys) -> None:
    assert main(["tiles", str(sectors_image), "--grid", "20x20", "--out", str(tmp_path / "10_s")]) == 2
    assert "at least 64 px" in capsys.readouterr().err
    assert not (tmp_path / "10_s").exists()


def test_tiles_keep_transparency(tmp_path: Path) -> None:
    rgba = photo_like((256, 256), seed=4).convert("RGBA")
    source = Source(tmp_path / "cut.png", np.asarray(rgba)[..., :3], np.asarray(rgba)[..., 3])
    tile = plan_tiles(source, Grid(2, 2)).tiles[3]
    assert tile_image(source, tile).mode == "RGBA"
