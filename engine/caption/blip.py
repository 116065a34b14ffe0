"""BLIP captioner: one sentence per image from a local transformers model folder.

The folder is what ``save_pretrained`` writes for ``BlipForConditionalGeneration`` and
``BlipProcessor`` (``config.json``, ``model.safetensors``, ``preprocessor_config.json`` and
the tokenizer files), e.g. a copy of Salesforce/blip-image-captioning-large. Nothing is
downloaded (``local_files_only``). Images go through transformers' PIL image processor so
that torchvision is never needed. Weights load from ``.safetensors`` only, unless the user
explicitly allows pickle files.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import torch
from kiln.engine.caption.model_folders import check_blip_folder
from kiln.engine.caption.settings import BlipSettings
from kiln.engine.errors import ModelError, UsageError
from PIL import Image


def resolve_device(choice: str) -> torch.device:
    """The device to run on: CUDA when asked for or present under ``auto``, else CPU."""
    if choice == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is visible to torch; use --device cpu")
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def strip_prefix(text: str, prefix: str) -> str:
    """``text`` without a leading ``prefix`` (case and spacing as the tokenizer left them)."""
    words = prefix.split()
    if not words:
        return text.strip()
    pattern = r"^\s*" + r"\s*".join(re.escape(word) for word in words) + r"(?![\w])[\s,:;.-]*"
    return re.sub(pattern, "", text, count=1, flags=re.IGNORECASE).strip()


class BlipCaptioner:
    """A BLIP model and processor loaded from a folder; captions PIL images in batches.

    Attributes:
        style: ``"blip"``.
        batch_size: Images per ``generate`` call.
        device: Where the model runs.
    """

    style = "blip"

    def __init__(self, folder: Path, settings: BlipSettings | None = None) -> None:
        """Load the model and processor from ``folder``, offline.

        Raises:
            ModelError: The folder is incomplete or transformers cannot load it.
        """
        self.folder = Path(folder).expanduser()
        self.settings = settings or BlipSettings()
        check_blip_folder(self.folder, self.settings.allow_pickle)  # before the slow import

        from transformers import AutoTokenizer, BlipForConditionalGeneration, BlipProcessor
        from transformers.utils import logging as hf_logging

        # tqdm bars from transformers would tear through Kiln's progress bar and the TUI.
        hf_logging.disable_progress_bar()
        self.device = resolve_device(self.settings.device)
        self.batch_size = self.settings.batch_size
        try:
            image_processor = _image_processor_class().from_pretrained(self.folder, local_files_only=True)
            tokenizer = AutoTokenizer.from_pretrained(self.folder, local_files_only=True)
            self.processor = BlipProcessor(image_processor=image_processor, tokenizer=tokenizer)
            self.model = BlipForConditionalGeneration.from_pretrained(
                self.folder,
                local_files_only=True,
                use_safetensors=None if self.settings.allow_pickle else True,
            )
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
            first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
            raise ModelError(f"{self.folder}: transformers cannot load this BLIP model ({first})") from exc
        # transformers types .to() as its dtype-only overload; a device is what it takes here.
        self.model.to(self.device).eval()  # type: ignore[arg-type]

    def caption_batch(self, images: Sequence[Image.Image]) -> list[str]:
        """One sentence per image, with the conditional prefix removed; the captioner interface."""
        if not images:
            return []
        settings = self.settings
        text = [settings.prefix] * len(images) if settings.prefix.strip() else None
        pixels = [image.convert("RGB") for image in images]
        inputs = self.processor(images=pixels, text=text, return_tensors="pt")
        inputs = {key: value.to(self.device) for key, value in inputs.items() if value is not None}
        with torch.inference_mode():
            output = self.model.generate(
                **inputs,
                num_beams=settings.beams,
                min_new_tokens=settings.min_new_tokens,
                max_new_tokens=settings.max_new_tokens,
            )
        texts = self.processor.batch_decode(output, skip_special_tokens=True)
        return [" ".join(strip_prefix(line, settings.prefix).split()) for line in texts]

    def close(self) -> None:
        """Free the model (and its GPU memory)."""
        self.model = None  # type: ignore[assignment]
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def _image_processor_class():
    """transformers' PIL-backed BLIP image processor (no torchvision), whatever its name."""
    import transformers

    # transformers >= 5 names the PIL path BlipImageProcessorPil; older releases only have
    # the PIL-based BlipImageProcessor.
    return getattr(transformers, "BlipImageProcessorPil", None) or transformers.BlipImageProcessor
