"""Per-word embeddings from a CLIP text encoder: ``[BOS, word, EOS]``, batched, BOS computed once.

Which embedding: SD 1.5 conditions the U-Net on the whole ``last_hidden_state`` (77 x 768,
after the final layer norm), and a word's meaning reaches it first through the state at the
word's own position. CLIP's attention is causal, so that state depends only on BOS and the
word: it is the same whether the prompt is ``[BOS, word, EOS]`` or the word padded to 77
tokens, and the same wherever the word starts a prompt. That makes it the cleanest per-word
signal, and it is the default (``position="word"``). The alternative, the EOS state right
after the word (``position="eos"``), summarises the prompt and is what the padding
positions repeat; CLIP trained it for the pooled output, which SD 1.5 does not use, and it
mixes in whatever the EOS token itself drifted to, so it is offered but not the default.

Speed: the BOS token's state (and its attention keys and values in every layer) is the same
for every word, so it is computed once; each word then costs one token's forward pass (two
with ``position="eos"``) instead of 77. The short path is checked against the model's own
forward on the first words of every call and replaced by that forward if they disagree (a
transformers release that changes CLIP's layer internals would do that).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

Position = Literal["word", "eos"]
POSITIONS: tuple[Position, ...] = ("word", "eos")
DEFAULT_BATCH = 512
# Relative tolerance of the short path against the model's own forward (float32 rounding).
_CHECK_TOLERANCE = 1e-4
_CHECK_WORDS = 4

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


def word_embeddings(
    model: nn.Module,
    token_ids: Sequence[int],
    bos_id: int,
    eos_id: int,
    position: Position = "word",
    batch_size: int = DEFAULT_BATCH,
    progress: Progress | None = None,
) -> torch.Tensor:
    """The embedding each word gets at ``position`` of ``[BOS, word, EOS]``, float32, on the CPU.

    Args:
        model: A ``CLIPTextModel`` in eval mode (on any device).
        token_ids: One token id per word.
        bos_id: The tokenizer's BOS id; ``eos_id`` its EOS id.
        position: ``word`` (the word's own state) or ``eos`` (the state after it).
        batch_size: Words per forward pass.
        progress: Called with ``(words done, words)`` after every batch; it may raise to cancel.

    Returns:
        A ``(len(token_ids), hidden)`` tensor.
    """
    if position not in POSITIONS:
        raise ValueError(f"position must be one of {POSITIONS}, not {position!r}")
    device = next(model.parameters()).device
    ids = torch.tensor(list(token_ids), dtype=torch.long, device=device).reshape(-1, 1)
    if position == "eos":
        ids = torch.cat([ids, torch.full_like(ids, eos_id)], dim=1)
    total = ids.shape[0]
    out = torch.empty((total, _hidden_size(model)), dtype=torch.float32)
    with torch.inference_mode():
        encode = _short_path_or_full(model, ids[:_CHECK_WORDS], bos_id)
        for start in range(0, total, batch_size):
            chunk = ids[start : start + batch_size]
            out[start : start + chunk.shape[0]] = encode(chunk)[:, -1].float().cpu()
            if progress is not None:
                progress(start + chunk.shape[0], total)
    return out


def padded_word_embeddings(
    model: nn.Module,
    token_ids: Sequence[int],
    bos_id: int,
    eos_id: int,
    length: int = 77,
    position: Position = "word",
) -> torch.Tensor:
    """The naive way, one word at a time: ``[BOS, word, EOS, EOS...]`` padded to ``length``.

    This is how a prompt reaches SD 1.5 (its tokenizer pads with EOS); the benchmark and the
    tests use it to show that ``word_embeddings`` gives the same vectors.
    """
    device = next(model.parameters()).device
    index = 1 if position == "word" else 2
    rows = []
    with torch.inference_mode():
        for token in token_ids:
            ids = torch.full((1, length), eos_id, dtype=torch.long, device=device)
            ids[0, 0], ids[0, 1] = bos_id, int(token)
            rows.append(model(input_ids=ids).last_hidden_state[0, index].float().cpu())
    return torch.stack(rows)


def _hidden_size(model: nn.Module) -> int:
    return int(_parts(model)[0].token_embedding.weight.shape[1])


def _parts(model: nn.Module) -> tuple[Any, Sequence[Any], Any]:
    """Embeddings, encoder layers and final norm, with or without the ``text_model`` level.

    Typed ``Any``: the parts are transformers' CLIP modules, reached by attribute name.
    """
    core: Any = getattr(model, "text_model", model)
    return core.embeddings, core.encoder.layers, core.final_layer_norm


def _full_forward(model: nn.Module, ids: torch.Tensor, bos_id: int) -> torch.Tensor:
    """The model's own forward on ``[BOS, *ids]``; the states after BOS."""
    bos = torch.full((ids.shape[0], 1), bos_id, dtype=torch.long, device=ids.device)
    return model(input_ids=torch.cat([bos, ids], dim=1)).last_hidden_state[:, 1:]


def _short_path_or_full(
    model: nn.Module, sample: torch.Tensor, bos_id: int
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The BOS-cached encoder if it matches the model's own forward on ``sample``, else that forward."""
    try:
        prefix = _bos_keys_values(model, bos_id)

        def short(chunk: torch.Tensor) -> torch.Tensor:
            return _run_layers(model, chunk, start=1, prefix=prefix)[0]

        fast, full = short(sample), _full_forward(model, sample, bos_id)
        scale = float(full.abs().max()) or 1.0
        if float((fast - full).abs().max()) <= _CHECK_TOLERANCE * scale:
            return short
        log.warning("TEC: the BOS-cached encoding disagrees with the model's forward; using the full forward")
    except (AttributeError, TypeError, RuntimeError) as exc:
        log.warning("TEC: BOS-cached encoding unavailable (%s); using the full forward", exc)
    return lambda chunk: _full_forward(model, chunk, bos_id)


def _bos_keys_values(model: nn.Module, bos_id: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Every layer's attention keys and values for the BOS token at position 0."""
    device = next(model.parameters()).device
    bos = torch.tensor([[bos_id]], dtype=torch.long, device=device)
    return _run_layers(model, bos, start=0, prefix=None)[1]


def _run_layers(
    model: nn.Module, ids: torch.Tensor, start: int, prefix: list[tuple[torch.Tensor, torch.Tensor]] | None
) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
    """CLIP's encoder on ``ids`` at positions ``start, start+1, ...``, after cached ``prefix`` tokens.

    Each layer is CLIP's pre-norm block: ``x + attn(ln1(x))`` with causal attention over the
    prefix and the tokens so far, then ``x + mlp(ln2(x))``; the final layer norm closes.
    Returns the final states and each layer's keys and values of ``ids`` (to serve as a prefix).
    """
    embeddings, layers, final_norm = _parts(model)
    batch, length = ids.shape
    positions = torch.arange(start, start + length, device=ids.device).unsqueeze(0)
    x = embeddings(input_ids=ids, position_ids=positions)
    cached = 0 if prefix is None else prefix[0][0].shape[2]
    # Token i (at position start + i) sees the prefix and tokens 0..i.
    mask = torch.ones(length, cached + length, dtype=torch.bool, device=ids.device).tril(diagonal=cached)
    keys_values = []
    for index, layer in enumerate(layers):
        attention = layer.self_attn
        hidden = layer.layer_norm1(x)
        query, key, value = (
            _heads(projection(hidden), attention.num_heads)
            for projection in (attention.q_proj, attention.k_proj, attention.v_proj)
        )
        keys_values.append((key, value))
        if prefix is not None:
            cached_key, cached_value = prefix[index]
            key = torch.cat([cached_key.expand(batch, -1, -1, -1), key], dim=2)
            value = torch.cat([cached_value.expand(batch, -1, -1, -1), value], dim=2)
        attended = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=attention.scale)
        x = x + attention.out_proj(attended.transpose(1, 2).reshape(batch, length, -1))
        x = x + layer.mlp(layer.layer_norm2(x))
    return final_norm(x), keys_values


def _heads(states: torch.Tensor, heads: int) -> torch.Tensor:
    batch, length, width = states.shape
    return states.reshape(batch, length, heads, width // heads).transpose(1, 2)
