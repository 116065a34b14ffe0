"""Benchmark: the TEC meter on a real-size CLIP ViT-L text encoder against the naive encoding, in one run.

The reference is SD 1.5's text encoder as configured (hidden 768, 12 layers, 12 heads,
intermediate 3072, vocabulary 49,408, 77 positions), built from Kiln's shipped config with
seeded random weights; the candidate is the same with relative noise added to every weight.
Both are written once as text-encoder-only single files in SD 1.5's key layout
(``bench/_data/tec/``, ~490 MB each) so the measured run includes loading them, as
``kiln tec`` does. The tokenizer is SD 1.5's real CLIP tokenizer shipped with Kiln, in which
every built-in probe word is one token.

* Kiln: ``checkpoint_tec_report`` end to end (load both text encoders, the built-in ~2,100
  words, BOS-cached batched encoding, score, confusion, layer distances), timed.
* Baseline (the naive way): each word tokenised and padded to 77 tokens, encoded one at a
  time by each model, the word position's state taken. Timed on a sample of words and
  extrapolated per word to the whole probe set (the full run would take an hour on 2 cores);
  the sample's embeddings are compared with Kiln's (they must agree to float rounding).
* For context, the batched model forward on ``[BOS, word, EOS]`` without the BOS cache, timed
  on a sample and extrapolated the same way.

Run from the repository root:  python -m bench.tec [--sample 24] [--noise 0.05] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
from kiln.engine.models.ldm_keys import CLIP_PREFIX
from kiln.engine.models.loading import SD15_CONFIG_DIR
from kiln.engine.tec.embed import padded_word_embeddings
from kiln.engine.tec.meter import ProbeOptions, checkpoint_tec_report

DATA = Path(__file__).resolve().parent / "_data" / "tec"
SEED = 1234


def write_encoders(noise: float) -> tuple[Path, Path]:
    """Write the reference and the noisy candidate as text-encoder-only single files (once)."""
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel

    reference, candidate = DATA / "reference.safetensors", DATA / f"candidate-noise{noise:g}.safetensors"
    if reference.exists() and candidate.exists():
        return reference, candidate
    DATA.mkdir(parents=True, exist_ok=True)
    config = CLIPTextConfig.from_json_file(str(SD15_CONFIG_DIR / "text_encoder" / "config.json"))
    torch.manual_seed(SEED)
    state = {
        key.removeprefix("text_model."): value for key, value in CLIPTextModel(config).state_dict().items()
    }
    state.pop("embeddings.position_ids", None)
    save_file({CLIP_PREFIX + key: value.contiguous() for key, value in state.items()}, str(reference))
    generator = torch.Generator().manual_seed(SEED + 1)
    noisy = {}
    for key, value in sorted(state.items()):
        rms = value.float().pow(2).mean().sqrt()
        noisy[CLIP_PREFIX + key] = (
            value + noise * rms * torch.randn(value.shape, generator=generator)
        ).contiguous()
    save_file(noisy, str(candidate))
    return reference, candidate


def bench(sample: int, noise: float, device: str, batch: int) -> dict:
    reference, candidate = write_encoders(noise)
    start, cpu = time.perf_counter(), time.process_time()
    report = checkpoint_tec_report(candidate, reference, ProbeOptions(batch_size=batch, device=device))
    kiln, kiln_cpu = time.perf_counter() - start, time.process_time() - cpu
    words = len(report.words)

    from kiln.engine.tec.loading import load_text_encoder
    from kiln.engine.tec.vocab import probe_set

    ref, cand = load_text_encoder(reference), load_text_encoder(candidate)
    probe = probe_set(ref.tokenizer)
    tokenizer = ref.tokenizer
    picks = list(range(0, words, max(1, words // sample)))[:sample]
    ids = [probe.token_ids[i] for i in picks]
    start, cpu = time.perf_counter(), time.process_time()
    naive_ref = padded_word_embeddings(ref.model, ids, tokenizer.bos_token_id, tokenizer.eos_token_id)
    naive_cand = padded_word_embeddings(cand.model, ids, tokenizer.bos_token_id, tokenizer.eos_token_id)
    naive_per_word = (time.perf_counter() - start) / len(ids)
    naive_cpu_per_word = (time.process_time() - cpu) / len(ids)

    # Kiln's vectors for the same words, to show the shortcut changes nothing.
    from kiln.engine.tec.embed import word_embeddings

    kiln_ref = word_embeddings(ref.model, ids, tokenizer.bos_token_id, tokenizer.eos_token_id)
    kiln_cand = word_embeddings(cand.model, ids, tokenizer.bos_token_id, tokenizer.eos_token_id)
    gap = max(float((kiln_ref - naive_ref).abs().max()), float((kiln_cand - naive_cand).abs().max()))
    naive_cos = torch.nn.functional.cosine_similarity(naive_cand, naive_ref)
    kiln_cos = torch.tensor([report.cosine(i) for i in picks])
    cos_gap = float((naive_cos - kiln_cos).abs().max())

    # The batched model forward on [BOS, word, EOS] without the BOS cache, on a larger sample.
    plain_ids = torch.tensor(probe.token_ids[: min(words, 4 * batch)]).reshape(-1, 1)
    full = torch.cat(
        [
            torch.full_like(plain_ids, tokenizer.bos_token_id),
            plain_ids,
            torch.full_like(plain_ids, tokenizer.eos_token_id),
        ],
        dim=1,
    )
    start = time.perf_counter()
    with torch.inference_mode():
        for model in (ref.model, cand.model):
            for chunk in full.split(batch):
                model(input_ids=chunk).last_hidden_state[:, 1]
    plain_per_word = (time.perf_counter() - start) / full.shape[0]

    naive_total = naive_per_word * words
    return {
        "words": words,
        "kiln_s": kiln,
        "naive_per_word_pair_s": naive_per_word,
        "naive_sample": len(ids),
        "naive_extrapolated_s": naive_total,
        "ratio": naive_total / kiln,
        "kiln_cpu_s": kiln_cpu,
        "naive_cpu_extrapolated_s": naive_cpu_per_word * words,
        "cpu_ratio": naive_cpu_per_word * words / kiln_cpu,
        "batched_3_token_extrapolated_s": plain_per_word * words,
        "max_abs_gap": gap,
        "max_cosine_gap": cos_gap,
        "score": report.score,
        "confusion_rate": report.confusion_rate,
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "cpu": platform.processor() or platform.machine(),
        "load": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sample", type=int, default=24, help="words timed the naive way (default 24)")
    parser.add_argument("--noise", type=float, default=0.05, help="candidate's relative weight noise")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    result = bench(args.sample, args.noise, args.device, args.batch)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    r = result
    lines = [
        f"{r['words']} words, CLIP ViT-L (SD 1.5 size), {r['device']}, {r['torch_threads']} threads, "
        f"load avg {r['load']:.1f}",
        f"kiln (load both + measure): {r['kiln_s']:.1f} s wall, {r['kiln_cpu_s']:.1f} s CPU",
        f"naive padded-77, one word at a time: {r['naive_per_word_pair_s']:.2f} s per word (both models, "
        f"{r['naive_sample']} sampled) -> {r['naive_extrapolated_s']:.0f} s for all words; "
        f"ratio {r['ratio']:.0f}x (CPU time: {r['naive_cpu_extrapolated_s']:.0f} s, {r['cpu_ratio']:.0f}x)",
        f"batched [BOS, word, EOS] forward, no BOS cache: {r['batched_3_token_extrapolated_s']:.1f} s "
        "(encoding only)",
        f"kiln vs naive on the sample: max |diff| {r['max_abs_gap']:.2e}, "
        f"cosine gap {r['max_cosine_gap']:.2e}",
        f"score {r['score']:.3f}, confusion {100 * r['confusion_rate']:.2f}%",
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
