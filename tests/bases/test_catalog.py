"""The base catalog: tiny checkpoints whose text encoders were perturbed by known amounts rank
in that order, both families and both layouts are identified, a second look reads no tensor
and hashes nothing, a changed file is measured again, and the caption-style hint moves the
right way for an encoder changed only on tag tokens."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import torch
from kiln.engine.bases.catalog import Catalog, StyleProbe, scan_bases
from kiln.engine.bases.identify import find_checkpoints, identify
from kiln.engine.bases.styles import guide_style, style_hint
from kiln.engine.errors import UsageError
from kiln.engine.tec.meter import ProbeOptions

from tests.tinytec import LETTERS, file_variant, folder_variant, with_noise

OPTIONS = ProbeOptions(words=LETTERS, words_source="letters")
# The tiny byte-level tokenizer knows single characters only: letters stand in for the words.
TAGS, SENTENCES = tuple("abcdefghijklm"), tuple("nopqrstuvwxyz")
PROBE = StyleProbe(TAGS, SENTENCES)


def tag_rows_only(tokenizer, scale: float):
    """Perturb the token-embedding rows of the "tag" letters alone."""
    ids = [tokenizer.convert_tokens_to_ids(f"{letter}</w>") for letter in TAGS]

    def transform(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = dict(state)
        table = state["embeddings.token_embedding.weight"].clone()
        generator = torch.Generator().manual_seed(11)
        table[ids] += scale * table.std() * torch.randn(len(ids), table.shape[1], generator=generator)
        out["embeddings.token_embedding.weight"] = table
        return out

    return transform


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, tiny_file: Path, tiny_folder: Path) -> Path:
    """A model folder: SD 1.5 single files at three noise levels, a diffusers-folder variant,
    a LoRA and a VAE-only file (neither is a base), and a nested folder."""
    root = tmp_path_factory.mktemp("bases") / "models"
    (root / "nested").mkdir(parents=True)
    file_variant(tiny_file, root / "clean.safetensors", with_noise(0.0))
    file_variant(tiny_file, root / "nested" / "drifting.safetensors", with_noise(0.05))
    file_variant(tiny_file, root / "corrupted.safetensors", with_noise(0.5))
    folder_variant(tiny_folder, root / "folder-base", with_noise(0.2))
    from safetensors.torch import save_file

    save_file(
        {"lora_te_text_model_encoder_layers_0_mlp_fc1.alpha": torch.ones(())}, str(root / "lora.safetensors")
    )
    save_file({"first_stage_model.decoder.conv_in.weight": torch.zeros(2)}, str(root / "vae.safetensors"))
    return root


def scan(models: Path, catalog: Catalog, **kwargs):
    return scan_bases([models], {"sd15": kwargs.pop("reference")}, catalog, OPTIONS, PROBE, **kwargs)


def test_bases_rank_by_how_far_their_encoders_moved(models: Path, tiny_file: Path, tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "bases.json")
    entries, notes = scan(models, catalog, reference=tiny_file)
    names = [entry.checkpoint.path.name for entry in entries]
    assert names == ["clean.safetensors", "drifting.safetensors", "folder-base", "corrupted.safetensors"]
    scores = [entry.measurement.score for entry in entries]
    assert scores[0] == pytest.approx(0.0, abs=1e-6) and scores == sorted(scores)
    assert entries[0].measurement.verdict == "close to zero"
    assert entries[-1].measurement.verdict == "corrupted"
    assert entries[-1].measurement.confused > 0 and entries[-1].measurement.top_confused
    folder = next(entry for entry in entries if entry.checkpoint.kind == "folder")
    assert folder.checkpoint.family == "sd15" and folder.checkpoint.prediction == "epsilon"
    single = entries[0]
    assert single.sha256 == hashlib.sha256((models / "clean.safetensors").read_bytes()).hexdigest()
    assert single.autov2 == single.sha256[:10].upper()
    assert not notes  # the LoRA and the VAE file are not bases, and not noise either


def test_a_second_look_reads_no_tensor_and_hashes_nothing(
    models: Path, tiny_file: Path, tmp_path: Path, monkeypatch
) -> None:
    catalog = Catalog(tmp_path / "bases.json")
    first, _ = scan(models, catalog, reference=tiny_file)

    def refuse(*_args, **_kwargs):
        raise AssertionError("read weights or hashed a file the catalog knows")

    import safetensors
    import safetensors.torch

    monkeypatch.setattr("kiln.engine.bases.catalog.file_hash", refuse)
    monkeypatch.setattr("kiln.engine.tec.meter.load_text_encoders", refuse)
    monkeypatch.setattr(safetensors, "safe_open", refuse)
    monkeypatch.setattr(safetensors.torch, "load_file", refuse)
    written = (tmp_path / "bases.json").stat().st_mtime_ns
    again, _ = scan(models, Catalog.load(tmp_path / "bases.json"), reference=tiny_file)
    assert [entry.to_json() for entry in again] == [entry.to_json() for entry in first]
    assert (tmp_path / "bases.json").stat().st_mtime_ns == written  # nothing learnt, nothing written


def test_a_changed_file_is_measured_again(models: Path, tiny_file: Path, tmp_path: Path, monkeypatch) -> None:
    copy = tmp_path / "models"
    shutil.copytree(models, copy)
    catalog = Catalog(tmp_path / "bases.json")
    before = {e.checkpoint.path.name: e for e in scan(copy, catalog, reference=tiny_file)[0]}
    file_variant(tiny_file, copy / "clean.safetensors", with_noise(0.3))
    measured: list[str] = []
    import kiln.engine.tec.meter as meter

    original = meter.ReferenceProbe.measure

    def counted(self, candidate, progress=None):
        measured.append(Path(candidate).name)
        return original(self, candidate, progress)

    monkeypatch.setattr(meter.ReferenceProbe, "measure", counted)
    after = {e.checkpoint.path.name: e for e in scan(copy, catalog, reference=tiny_file)[0]}
    assert set(measured) == {"clean.safetensors"}  # twice: the TEC words and the style words
    assert after["clean.safetensors"].sha256 != before["clean.safetensors"].sha256
    assert after["clean.safetensors"].measurement.score > before["clean.safetensors"].measurement.score


def test_sdxl_bases_are_measured_against_the_sdxl_reference(
    tiny_sdxl: Path, tiny_sdxl_single_file: Path, tmp_path: Path
) -> None:
    from kiln.engine.models.tiny_sdxl import write_tiny_sdxl_model

    root = tmp_path / "xl"
    root.mkdir()
    shutil.copy(tiny_sdxl_single_file, root / "xl-same.safetensors")
    write_tiny_sdxl_model(root / "xl-other.safetensors", single_file=True, seed=99)
    entries, _ = scan_bases([root], {"sdxl": tiny_sdxl}, Catalog(tmp_path / "c.json"), OPTIONS, PROBE)
    assert [e.checkpoint.path.name for e in entries] == ["xl-same.safetensors", "xl-other.safetensors"]
    assert all(e.checkpoint.family == "sdxl" for e in entries)
    assert entries[0].measurement.score == pytest.approx(0.0, abs=1e-6)
    assert entries[1].measurement.score > 1.0
    assert identify(tiny_sdxl).kind == "folder" and identify(tiny_sdxl).family == "sdxl"


def test_without_a_reference_of_its_family_a_base_is_listed_unmeasured(models: Path, tmp_path: Path) -> None:
    entries, _ = scan_bases([models], {}, Catalog(tmp_path / "c.json"), OPTIONS, PROBE)
    assert len(entries) == 4 and all(entry.measurement is None for entry in entries)
    assert "--reference" in entries[0].error


def test_the_style_hint_points_to_tags_for_an_encoder_changed_on_tag_tokens(
    tiny_file: Path, tiny_encoder, tmp_path: Path
) -> None:
    root = tmp_path / "m"
    root.mkdir()
    file_variant(tiny_file, root / "tagged.safetensors", tag_rows_only(tiny_encoder.tokenizer, 2.0))
    (entry,), _ = scan_bases([root], {"sd15": tiny_file}, Catalog(tmp_path / "c.json"), OPTIONS, PROBE)
    hint = entry.measurement.hint
    assert hint is not None and hint.style == "wd14"
    assert hint.tag_drift > 10 * hint.sentence_drift
    # The reverse split of the same encoder points to sentences.
    reverse = style_hint(tuple("abcdefghijklmnopqrstuvwxyz"), [0.0] * 13 + [0.2] * 13, TAGS, SENTENCES)
    assert reverse is not None and reverse.style == "blip"


def test_the_users_note_beats_the_guides_default(models: Path, tiny_file: Path, tmp_path: Path) -> None:
    named = tmp_path / "named"
    named.mkdir()
    shutil.copy(models / "clean.safetensors", named / "darkDream_v2.safetensors")
    shutil.copy(models / "clean.safetensors", named / "kotosmix_v1.safetensors")
    catalog = Catalog(tmp_path / "c.json")
    entries = {e.checkpoint.path.name: e for e in scan(named, catalog, reference=tiny_file)[0]}
    dark = entries["darkDream_v2.safetensors"]
    assert (dark.style, dark.style_source) == ("blip", "guide") and "Darkdream" in dark.style_note
    # Two files with the same bytes are one base to the catalog (keyed by hash): a note
    # on one is a note on both.
    catalog.set_style(named / "kotosmix_v1.safetensors", "either")
    catalog.save()
    entries = {
        e.checkpoint.path.name: e for e in scan(named, Catalog.load(catalog.path), reference=tiny_file)[0]
    }
    assert entries["kotosmix_v1.safetensors"].style == "either"
    assert entries["kotosmix_v1.safetensors"].style_source == "yours"
    with pytest.raises(UsageError, match="caption style 'tags'"):
        catalog.set_style(named / "kotosmix_v1.safetensors", "tags")


def test_the_guides_five_bases_are_known_by_name() -> None:
    assert guide_style("RFKTR_Darkdream_v3")[0] == "blip"
    assert guide_style("neverendingDreamNED_v122BakedVae")[0] == "either"
    assert guide_style("anythingV5Ink_ink")[0] == "wd14"
    assert guide_style("kotosmix_v10")[0] == "wd14"
    assert guide_style("revAnimated_v122") is None  # the guide names no style for ReV Animated


def test_find_skips_loras_and_vaes_and_names_pickles(models: Path, tmp_path: Path) -> None:
    paths, notes = find_checkpoints([models])
    assert {path.name for path in paths} == {
        "clean.safetensors",
        "drifting.safetensors",
        "corrupted.safetensors",
        "folder-base",
    }
    (tmp_path / "old.ckpt").write_bytes(b"x")
    _, notes = find_checkpoints([tmp_path])
    assert any("old.ckpt: a pickle checkpoint" in note for note in notes)
