"""Write SD 1.5's CLIP tokenizer files (vocab.json, merges.txt) from OpenAI's BPE merge list.

SD 1.5 single-file checkpoints carry no tokenizer, and Kiln never downloads, so the package
ships these two files in ``engine/models/configs/sd15/tokenizer/``. They are derived, token for token,
from ``bpe_simple_vocab_16e6.txt.gz`` (MIT, OpenAI CLIP; it ships in the clip-anytorch and
open-clip-torch wheels). Run once:  python scripts/make_sd15_tokenizer.py PATH/TO/bpe_simple_vocab_16e6.txt.gz
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

from kiln.engine.models.tiny import byte_vocab

OUT = Path(__file__).resolve().parent.parent / "kiln.engine" / "train" / "sd15" / "tokenizer"
# CLIP keeps the first 49152 - 256 - 2 merges of the list (the first line is a header).
MERGES = 49152 - 256 - 2


def main(source: Path) -> None:
    with gzip.open(source, "rt", encoding="utf-8") as handle:
        lines = handle.read().split("\n")[1 : MERGES + 1]
    merges = [tuple(line.split()) for line in lines]
    symbols = [token for token in byte_vocab() if not token.endswith("</w>") and not token.startswith("<|")]
    tokens = symbols + [symbol + "</w>" for symbol in symbols]
    tokens += ["".join(pair) for pair in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    OUT.mkdir(parents=True, exist_ok=True)
    vocab = {token: index for index, token in enumerate(tokens)}
    (OUT / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (OUT / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(" ".join(pair) for pair in merges) + "\n", encoding="utf-8"
    )
    print(f"{len(vocab)} tokens, {len(merges)} merges -> {OUT}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
