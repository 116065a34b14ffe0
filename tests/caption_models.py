"""Tiny captioning models written by the tests themselves: a WD14-shaped ONNX tagger and a BLIP.

The WD14 model is a few ONNX nodes whose scores follow known pixel statistics, so a test
can tell from the tags whether the input was BGR, padded with white and centred:

* ``red_theme`` scores (mean of input channel 2 - 200) / 8: high for a red image only if
  the pixels arrive in BGR order (channel 2 is R in BGR, B in RGB); ``blue_theme`` reads
  channel 0 the same way.
* ``white_border`` scores (mean of the input's left quarter - 200) / 8: a tall image gets
  it only when padded with white *and* centred (pasted at the left, the quarter is the
  image itself; stretched, there is no border at all).
* The rest have constant scores around the thresholds (0.35 / 0.85).

The BLIP model has random weights but a language-model bias that makes it say ``cat``
over and over and never end on its own, so the output length shows the token limits.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

WD14_SIZE = 24

# name, category, feature weights on (B, G, R, left-quarter mean), bias
WD14_TAGS: list[tuple[str, int, tuple[float, float, float, float], float]] = [
    ("general", 9, (0, 0, 0, 0), 1.0),
    ("sensitive", 9, (0, 0, 1 / 8, 0), -25.0),  # wins the rating argmax for red images
    ("questionable", 9, (0, 0, 0, 0), -3.0),
    ("explicit", 9, (0, 0, 0, 0), -3.0),
    ("red_theme", 0, (0, 0, 1 / 8, 0), -25.0),
    ("blue_theme", 0, (1 / 8, 0, 0, 0), -25.0),
    ("white_border", 0, (0, 0, 0, 1 / 8), -25.0),
    ("long_hair", 0, (0, 0, 0, 0), 2.0),  # 0.88
    ("^_^", 0, (0, 0, 0, 0), 2.0),  # kaomoji: keeps its underscore
    ("low_confidence", 0, (0, 0, 0, 0), -1.0),  # 0.27: under 0.35, over 0.25
    ("hatsune_miku", 4, (0, 0, 0, 0), 1.5),  # 0.82: under 0.85, over 0.8
    ("hakurei_reimu_(cosplay)", 4, (0, 0, 0, 0), 3.0),  # 0.95
]
INPUT_NAME = "input_1:0"
OUTPUT_NAME = "predictions_sigmoid"


def write_wd14_model(
    folder: Path, batch: int | None = None, size: int = WD14_SIZE, layout: str = "NHWC", tags_csv: bool = True
) -> Path:
    """Write ``model.onnx`` and ``selected_tags.csv`` into ``folder``.

    Args:
        folder: Where to write (created).
        batch: A fixed batch size, or None for a free (dynamic) batch dimension.
        size: The square input side.
        layout: ``NHWC`` (WD14's) or ``NCHW`` (a wrong export, for the error path).
        tags_csv: Also write the CSV.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    folder.mkdir(parents=True, exist_ok=True)
    batch_dim: int | str = batch if batch is not None else "batch"
    if layout == "NHWC":
        shape = [batch_dim, size, size, 3]
        spatial, channel_axes = [1, 2], [1, 2, 3]
        mask = np.zeros((1, size, size, 1), dtype=np.float32)
        mask[:, :, : size // 4, :] = 1.0
    else:
        shape = [batch_dim, 3, size, size]
        spatial, channel_axes = [2, 3], [1, 2, 3]
        mask = np.zeros((1, 1, size, size), dtype=np.float32)
        mask[:, :, :, : size // 4] = 1.0
    share = mask.mean()
    weights = np.array([row[2] for row in WD14_TAGS], dtype=np.float32).T  # (4, T)
    weights[3] /= share  # the masked mean over the whole image -> mean over the quarter
    bias = np.array([row[3] for row in WD14_TAGS], dtype=np.float32)
    initializers = [
        numpy_helper.from_array(mask, "mask"),
        numpy_helper.from_array(weights, "weights"),
        numpy_helper.from_array(bias, "bias"),
        numpy_helper.from_array(np.array([-1, 1], dtype=np.int64), "column"),
    ]
    nodes = [
        helper.make_node("ReduceMean", [INPUT_NAME], ["means"], axes=spatial, keepdims=0),
        helper.make_node("Mul", [INPUT_NAME, "mask"], ["masked"]),
        helper.make_node("ReduceMean", ["masked"], ["left4"], axes=channel_axes, keepdims=1),
        helper.make_node("Reshape", ["left4", "column"], ["left"]),
        helper.make_node("Concat", ["means", "left"], ["features"], axis=1),
        helper.make_node("MatMul", ["features", "weights"], ["logits0"]),
        helper.make_node("Add", ["logits0", "bias"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], [OUTPUT_NAME]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_wd14",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [batch_dim, len(WD14_TAGS)])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, folder / "model.onnx")
    if tags_csv:
        lines = ["tag_id,name,category,count"]
        lines += [
            f"{index},{name},{category},{1000 - index}"
            for index, (name, category, _, _) in enumerate(WD14_TAGS)
        ]
        (folder / "selected_tags.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


BLIP_WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "a", "picture", "of", "cat", "dog"]


def write_tiny_blip(folder: Path) -> Path:
    """Save a tiny BLIP captioner (config, safetensors weights, processor, tokenizer) to ``folder``.

    The tokenizer is a BERT word-piece vocabulary written here; ``[DEC]`` is registered as
    the BOS token and ``encoder_hidden_size`` equals the vision width, as BLIP needs.
    """
    import torch
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipProcessor

    try:
        from transformers import BlipImageProcessorPil as ImageProcessor
    except ImportError:  # transformers < 5
        from transformers import BlipImageProcessor as ImageProcessor

    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(BLIP_WORDS) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer(str(vocab), bos_token="[DEC]", model_max_length=64)
    ids = {word: index for index, word in enumerate(BLIP_WORDS)}
    width = 32
    config = BlipConfig(
        text_config={
            "vocab_size": len(BLIP_WORDS),
            "hidden_size": width,
            "encoder_hidden_size": width,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "intermediate_size": 37,
            "max_position_embeddings": 64,
            "bos_token_id": ids["[DEC]"],
            "pad_token_id": ids["[PAD]"],
            "sep_token_id": ids["[SEP]"],
            "eos_token_id": ids["[SEP]"],
        },
        vision_config={
            "hidden_size": width,
            "image_size": 32,
            "patch_size": 16,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "intermediate_size": 37,
        },
    )
    torch.manual_seed(0)
    model = BlipForConditionalGeneration(config).eval()
    with torch.no_grad():
        bias = model.text_decoder.cls.predictions.bias
        bias.zero_()
        bias[ids["cat"]] = 30.0  # always the likeliest word
        bias[ids["[SEP]"]] = -30.0  # never ends before max_new_tokens
    model.save_pretrained(folder)
    processor = BlipProcessor(
        image_processor=ImageProcessor(size={"height": 32, "width": 32}), tokenizer=tokenizer
    )
    processor.save_pretrained(folder)
    return folder
