"""The TEC measures on the tiny text encoder: zero for itself, growing with noise, swaps confused."""

from __future__ import annotations

import copy
import itertools
import logging

import pytest
import torch
from kiln.engine.tec import embed
from kiln.engine.tec.embed import padded_word_embeddings, word_embeddings
from kiln.engine.tec.measures import layer_distances, nearest_reference, tec_report
from kiln.engine.tec.reading import tec_reading
from kiln.engine.tec.vocab import full_vocab_probe_set, probe_set

from tests.tinytec import LETTERS


def embeddings_of(encoder, model, probe, position="word"):
    tokenizer = encoder.tokenizer
    return word_embeddings(model, probe.token_ids, tokenizer.bos_token_id, tokenizer.eos_token_id, position)


@pytest.mark.parametrize("position", ["word", "eos"])
def test_batched_bos_cached_embeddings_equal_the_padded_77_token_encoding(tiny_encoder, position) -> None:
    tokenizer = tiny_encoder.tokenizer
    ids = list(range(0, 512, 13))
    args = (tiny_encoder.model, ids, tokenizer.bos_token_id, tokenizer.eos_token_id)
    naive = padded_word_embeddings(*args, position=position)
    batched = word_embeddings(*args, position=position, batch_size=512)
    small_batches = word_embeddings(*args, position=position, batch_size=5)
    assert torch.allclose(batched, naive, atol=1e-5)
    assert batched.shape == naive.shape == (len(ids), 32)
    assert torch.allclose(small_batches, batched, atol=1e-6)


def test_a_short_path_that_disagrees_with_the_model_falls_back_to_its_forward(
    tiny_encoder, monkeypatch, caplog
) -> None:
    tokenizer = tiny_encoder.tokenizer
    ids = list(range(40))
    args = (tiny_encoder.model, ids, tokenizer.bos_token_id, tokenizer.eos_token_id)
    naive = padded_word_embeddings(*args)
    real = embed._run_layers

    def broken(model, ids, start, prefix):
        states, keys_values = real(model, ids, start, prefix)
        return states + 1.0, keys_values

    monkeypatch.setattr(embed, "_run_layers", broken)
    with caplog.at_level(logging.WARNING, logger="kiln.engine.tec.embed"):
        result = word_embeddings(*args)
    assert "full forward" in caplog.text
    assert torch.allclose(result, naive, atol=1e-5)


def test_an_encoder_compared_with_itself_scores_zero_with_no_confusion(tiny_encoder) -> None:
    probe = full_vocab_probe_set(tiny_encoder.tokenizer)
    vectors = embeddings_of(tiny_encoder, tiny_encoder.model, probe)
    again = embeddings_of(tiny_encoder, copy.deepcopy(tiny_encoder.model), probe)
    report = tec_report(
        probe.words, again, vectors, layers=layer_distances(tiny_encoder.model, tiny_encoder.model)
    )
    assert len(report.words) == 512
    assert report.score == 0.0
    assert report.confusion_rate == 0.0 and report.confused() == []
    assert all(cosine == 1.0 for _, cosine in report.drifted())
    assert all(layer.relative_l2 == 0.0 for layer in report.layers)
    assert report.reading == "close to zero"


def noisy_copy(model: torch.nn.Module, scale: float) -> torch.nn.Module:
    noisy = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for _, param in sorted(noisy.named_parameters()):
            rms = param.pow(2).mean().sqrt()
            param.add_(scale * rms * torch.randn(param.shape, generator=generator))
    return noisy


def test_growing_weight_noise_grows_the_score_and_the_weight_distance(tiny_encoder) -> None:
    probe = full_vocab_probe_set(tiny_encoder.tokenizer)
    reference = embeddings_of(tiny_encoder, tiny_encoder.model, probe)
    scores, distances, rates = [], [], []
    for scale in (0.0, 0.003, 0.01, 0.03, 0.1, 0.3):
        model = noisy_copy(tiny_encoder.model, scale)
        report = tec_report(
            probe.words,
            embeddings_of(tiny_encoder, model, probe),
            reference,
            layers=layer_distances(model, tiny_encoder.model),
        )
        scores.append(report.score)
        rates.append(report.confusion_rate)
        distances.append(max(layer.relative_l2 for layer in report.layers))
    assert scores[0] == 0.0
    assert all(later > earlier for earlier, later in itertools.pairwise(scores)), scores
    assert all(later > earlier for earlier, later in itertools.pairwise(distances)), distances
    assert rates[-1] > 0 and rates[0] == 0


def test_swapping_two_token_rows_confuses_exactly_those_two_words(tiny_encoder) -> None:
    tokenizer = tiny_encoder.tokenizer
    probe = probe_set(tokenizer, LETTERS, "test")
    cat, dog = tokenizer.convert_tokens_to_ids(["c</w>", "d</w>"])
    swapped = copy.deepcopy(tiny_encoder.model)
    with torch.no_grad():
        table = swapped.get_input_embeddings().weight
        table[[cat, dog]] = table[[dog, cat]].clone()
    report = tec_report(
        probe.words,
        embeddings_of(tiny_encoder, swapped, probe),
        embeddings_of(tiny_encoder, tiny_encoder.model, probe),
    )
    assert {(pair.word, pair.nearest) for pair in report.confused()} == {("c", "d"), ("d", "c")}
    assert report.confusion_rate == pytest.approx(2 / len(LETTERS))
    assert {word for word, _ in report.drifted(2)} == {"c", "d"}
    assert all(cosine == 1.0 for word, cosine in report.drifted() if word not in "cd")
    assert all(pair.nearest_cosine == pytest.approx(1.0) for pair in report.confused())


def test_nearest_reference_keeps_a_row_that_ties_with_its_own_reference() -> None:
    reference = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    indices, cosines = nearest_reference(reference.clone(), reference)
    assert indices.tolist() == [0, 1, 2] and cosines.tolist() == pytest.approx([1.0, 1.0, 1.0])
    moved = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    indices, _ = nearest_reference(moved, reference)
    assert indices.tolist() == [2, 1, 2]


@pytest.mark.parametrize(
    ("score", "confusion", "reading"),
    [
        (0.0, 0.0, "close to zero"),
        (0.99, 0.0049, "close to zero"),
        (1.0, 0.0, "mild"),
        (0.1, 0.005, "mild"),
        (4.99, 0.049, "mild"),
        (5.0, 0.0, "heavy"),
        (0.1, 0.05, "heavy"),
    ],
)
def test_reading_takes_the_worse_of_score_and_confusion_bands(score, confusion, reading) -> None:
    assert tec_reading(score, confusion) == reading
