"""Checks that a local model folder holds what its captioner needs, without loading anything.

These run before a model is loaded (in the CLI, and in the TUI while the user types the
path), so they import no model library: a wrong folder is named in one line at once,
not after seconds of importing torch or onnxruntime.
"""

from __future__ import annotations

from pathlib import Path

from kiln.engine.errors import ModelError, UsageError

WD14_MODEL_FILE = "model.onnx"
WD14_TAGS_FILE = "selected_tags.csv"

# transformers < 5 saves the image settings as preprocessor_config.json, 5.x inside
# processor_config.json; hub copies of BLIP hold the former.
BLIP_PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
BLIP_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")


def check_wd14_folder(folder: Path) -> None:
    """Fail early when ``folder`` lacks ``model.onnx`` or ``selected_tags.csv``.

    Raises:
        ModelError: The folder or one of its files is missing.
    """
    if not folder.is_dir():
        raise ModelError(
            f"{folder}: no such model folder; pass a folder holding {WD14_MODEL_FILE} and {WD14_TAGS_FILE}"
        )
    for name in (WD14_MODEL_FILE, WD14_TAGS_FILE):
        if not (folder / name).is_file():
            raise ModelError(
                f"{folder / name}: missing; a WD14 folder holds {WD14_MODEL_FILE} and {WD14_TAGS_FILE}"
            )


def check_blip_folder(folder: Path, allow_pickle: bool = False) -> None:
    """Fail early, naming the missing file, before transformers gives a longer error.

    Raises:
        ModelError: The folder or one of its files is missing, or it has pickle weights only.
    """
    if not folder.is_dir():
        raise ModelError(f"{folder}: no such model folder; pass a folder saved by save_pretrained")
    if not (folder / "config.json").is_file():
        raise ModelError(f"{folder / 'config.json'}: missing; copy the whole BLIP model folder")
    if not any((folder / name).is_file() for name in BLIP_PROCESSOR_FILES):
        raise ModelError(
            f"{folder / BLIP_PROCESSOR_FILES[0]}: missing (the image settings); copy the whole BLIP folder"
        )
    if not any((folder / name).is_file() for name in BLIP_TOKENIZER_FILES):
        raise ModelError(f"{folder}: no tokenizer (tokenizer.json or vocab.txt); copy the whole BLIP folder")
    if any(folder.glob("*.safetensors")):
        return
    if any(folder.glob("*.bin")):
        if allow_pickle:
            return
        raise ModelError(
            f"{folder}: only pickle weights (*.bin); convert them to .safetensors or pass "
            "--allow-pickle if you trust the file"
        )
    raise ModelError(f"{folder}: no weights (model.safetensors); copy the whole BLIP folder")


def check_model_folder(style: str, folder: Path, allow_pickle: bool = False) -> None:
    """Check ``folder`` for the captioner of ``style`` (``blip`` or ``wd14``).

    Raises:
        UsageError: Unknown style.
        ModelError: The folder is missing or incomplete; the message names the file.
    """
    if style == "wd14":
        check_wd14_folder(folder)
    elif style == "blip":
        check_blip_folder(folder, allow_pickle)
    else:
        raise UsageError(f"style {style!r}: use blip or wd14")
