"""WD14 tagger: booru tags for an image from a local ``model.onnx`` + ``selected_tags.csv``.

Preprocessing follows the reference taggers (SmilingWolf's, Kohya's): transparent pixels
composited on white, the image padded to a square with white (centred), resized to the
model's input size, fed as float32 0..255 in **BGR** order, NHWC. The input size, input
and output names and whether the batch dimension is free are read from the ONNX session,
because exports differ (v2 models take batch 1 only).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from kiln.engine.caption.model_folders import WD14_MODEL_FILE, WD14_TAGS_FILE
from kiln.engine.caption.settings import Wd14Settings
from kiln.engine.caption.tagtext import join_tags
from kiln.engine.errors import ModelError
from PIL import Image

MODEL_FILE = WD14_MODEL_FILE
TAGS_FILE = WD14_TAGS_FILE
DEFAULT_SIZE = 448

CATEGORY_GENERAL = 0
CATEGORY_CHARACTER = 4
CATEGORY_RATING = 9

# Booru tags that are faces made of punctuation: their underscores are part of the face.
KAOMOJI = frozenset(
    {
        "0_0", "(o)_(o)", "+_+", "+_-", "._.", "<o>_<o>", "<|>_<|>", "=_=", ">_<", "3_3",
        "6_9", ">_o", "@_@", "^_^", "o_o", "u_u", "x_x", "|_|", "||_||",
    }
)  # fmt: skip


@dataclass(frozen=True)
class TagRow:
    """One row of ``selected_tags.csv``: the tag's raw name and category."""

    name: str
    category: int


@dataclass(frozen=True)
class ScoredTag:
    """A tag the model gave a score to, named as it will be written."""

    name: str
    category: int
    score: float


@dataclass(frozen=True)
class ImageTags:
    """The tags chosen for one image, most confident first within each group."""

    rating: ScoredTag | None
    characters: tuple[ScoredTag, ...]
    general: tuple[ScoredTag, ...]

    def names(self) -> list[str]:
        """Tag names in caption order: rating (when asked for), characters, general."""
        tags = [self.rating] if self.rating is not None else []
        return [tag.name for tag in (*tags, *self.characters, *self.general)]


def read_tag_rows(path: Path) -> list[TagRow]:
    """Read ``selected_tags.csv`` (``tag_id,name,category,count``).

    Raises:
        ModelError: The file is missing, lacks the ``name``/``category`` columns or holds
            a category that is not a number.
    """
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or not {"name", "category"} <= set(reader.fieldnames):
                raise ModelError(
                    f"{path}: expected columns tag_id,name,category,count; use the "
                    f"{TAGS_FILE} that came with the model"
                )
            rows = [TagRow(name=row["name"], category=int(row["category"])) for row in reader]
    except FileNotFoundError:
        raise ModelError(f"{path}: missing; put the model's {TAGS_FILE} next to {MODEL_FILE}") from None
    except (ValueError, TypeError) as exc:
        raise ModelError(f"{path}: a category is not a number ({exc}); use the model's own file") from exc
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ModelError(f"{path}: cannot read it ({exc}); use the model's own {TAGS_FILE}") from exc
    if not rows:
        raise ModelError(f"{path}: holds no tags; use the model's own {TAGS_FILE}")
    return rows


def written_name(raw: str, settings: Wd14Settings) -> str:
    """A tag name as it goes into a caption (underscores, parentheses)."""
    name = raw
    if settings.remove_underscores and raw not in KAOMOJI:
        name = name.replace("_", " ")
    if settings.escape_parentheses:
        name = name.replace("(", "\\(").replace(")", "\\)")
    return name


def _undesired_key(tag: str) -> str:
    return " ".join(tag.replace("_", " ").replace("\\", "").split()).lower()


def pad_to_square(image: Image.Image) -> Image.Image:
    """Centre ``image`` on a white square as large as its long side."""
    width, height = image.size
    side = max(width, height)
    if width == height:
        return image
    canvas = Image.new("RGB", (side, side), (255, 255, 255))
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


def model_input(image: Image.Image, size: int) -> np.ndarray:
    """One image as the tagger reads it: ``(size, size, 3)`` float32, 0..255, BGR.

    ``image`` must already be opaque RGB (see ``kiln.engine.caption.images.rgb_on_white``).
    """
    square = pad_to_square(image.convert("RGB"))
    if square.size != (size, size):
        square = square.resize((size, size), Image.Resampling.BICUBIC)
    rgb = np.asarray(square, dtype=np.float32)
    return np.ascontiguousarray(rgb[:, :, ::-1])


class Wd14Tagger:
    """A WD14 ONNX tagger loaded from a folder; tags PIL images in batches.

    Attributes:
        style: ``"wd14"``.
        size: The model's square input side, read from the session.
        batch_size: Images per inference: the setting when the batch dimension is free,
            else the model's fixed batch.
    """

    style = "wd14"

    def __init__(
        self, folder: Path, settings: Wd14Settings | None = None, providers: Sequence[str] | None = None
    ) -> None:
        """Load ``folder/model.onnx`` and ``folder/selected_tags.csv``.

        Raises:
            ModelError: A file is missing or unreadable, or the model's input or output does
                not have a WD14 tagger's shape.
        """
        self.folder = Path(folder).expanduser()
        self.settings = settings or Wd14Settings()
        if not self.folder.is_dir():
            raise ModelError(
                f"{self.folder}: no such model folder; pass a folder holding {MODEL_FILE} and {TAGS_FILE}"
            )
        model_path = self.folder / MODEL_FILE
        if not model_path.is_file():
            raise ModelError(f"{model_path}: missing; a WD14 folder holds {MODEL_FILE} and {TAGS_FILE}")
        self.rows = read_tag_rows(self.folder / TAGS_FILE)
        self.session = _open_session(model_path, providers)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or not outputs:
            raise ModelError(
                f"{model_path}: expected one image input, found {len(inputs)}; not a WD14 tagger export"
            )
        self.input_name = inputs[0].name
        self.output_name = outputs[0].name
        self.size, self.fixed_batch = _input_geometry(model_path, inputs[0])
        self._check_output(model_path, outputs[0].shape)
        requested = max(1, int(self.settings.batch_size))
        self.batch_size = self.fixed_batch if self.fixed_batch is not None else requested
        self._undesired = {_undesired_key(tag) for tag in self.settings.undesired}
        self._categories = np.array([row.category for row in self.rows], dtype=np.int64)

    def _check_output(self, model_path: Path, shape: Sequence[object]) -> None:
        if len(shape) != 2:
            raise ModelError(
                f"{model_path}: output shape {list(shape)} is not [batch, tags]; not a WD14 tagger export"
            )
        if isinstance(shape[1], int) and shape[1] != len(self.rows):
            raise ModelError(
                f"{model_path}: the model scores {shape[1]} tags but {TAGS_FILE} lists {len(self.rows)}; "
                "use the CSV that came with this model"
            )

    def scores(self, batch: np.ndarray) -> np.ndarray:
        """Raw scores ``(n, tags)`` for preprocessed images ``(n, size, size, 3)``."""
        results = []
        step = self.batch_size
        for start in range(0, len(batch), step):
            chunk = batch[start : start + step]
            real = len(chunk)
            if self.fixed_batch is not None and real < self.fixed_batch:
                # A fixed batch larger than one: fill it, then drop the filler's scores.
                filler = np.zeros((self.fixed_batch - real, *chunk.shape[1:]), dtype=np.float32)
                chunk = np.concatenate([chunk, filler])
            output = self.session.run([self.output_name], {self.input_name: chunk})[0]
            if output.shape[-1] != len(self.rows):
                raise ModelError(
                    f"{self.folder / MODEL_FILE}: scored {output.shape[-1]} tags, {TAGS_FILE} lists "
                    f"{len(self.rows)}; use the CSV that came with this model"
                )
            results.append(np.asarray(output[:real], dtype=np.float32))
        return np.concatenate(results) if results else np.zeros((0, len(self.rows)), dtype=np.float32)

    def tag_images(self, images: Sequence[Image.Image]) -> list[ImageTags]:
        """Tags for each image, in order."""
        if not images:
            return []
        batch = np.stack([model_input(image, self.size) for image in images])
        return [self.choose(row) for row in self.scores(batch)]

    def choose(self, scores: np.ndarray) -> ImageTags:
        """Pick the rating, character and general tags from one image's scores."""
        settings = self.settings
        rating: ScoredTag | None = None
        rating_rows = np.flatnonzero(self._categories == CATEGORY_RATING)
        if settings.rating and rating_rows.size:
            best = int(rating_rows[np.argmax(scores[rating_rows])])  # argmax: first on ties
            rating = self._scored(best, float(scores[best]))
            if _undesired_key(rating.name) in self._undesired:
                rating = None
        general = np.flatnonzero(
            (self._categories == CATEGORY_GENERAL) & (scores >= settings.general_threshold)
        )
        characters = np.flatnonzero(
            (self._categories == CATEGORY_CHARACTER) & (scores >= settings.character_threshold)
        )
        return ImageTags(
            rating=rating,
            characters=self._ranked([self._scored(int(i), float(scores[i])) for i in characters]),
            general=self._ranked([self._scored(int(i), float(scores[i])) for i in general]),
        )

    def _ranked(self, tags: list[ScoredTag]) -> tuple[ScoredTag, ...]:
        """Wanted tags, most confident first (the sort is stable: CSV order breaks ties)."""
        wanted = [tag for tag in tags if _undesired_key(tag.name) not in self._undesired]
        return tuple(sorted(wanted, key=lambda tag: -tag.score))

    def _scored(self, index: int, score: float) -> ScoredTag:
        row = self.rows[index]
        return ScoredTag(name=written_name(row.name, self.settings), category=row.category, score=score)

    def caption_batch(self, images: Sequence[Image.Image]) -> list[str]:
        """Captions (tags joined by ``, ``) for each image; the captioner interface."""
        return [join_tags(tags.names()) for tags in self.tag_images(images)]

    def close(self) -> None:
        """Release the session."""
        self.session = None


def _open_session(model_path: Path, providers: Sequence[str] | None):  # -> onnxruntime.InferenceSession
    import onnxruntime as ort

    available = ort.get_available_providers()
    if providers is None:
        providers = [name for name in ("CUDAExecutionProvider", "CPUExecutionProvider") if name in available]
    options = ort.SessionOptions()
    options.log_severity_level = 3  # ORT's own warnings would break the progress bar
    try:
        return ort.InferenceSession(str(model_path), sess_options=options, providers=list(providers))
    except Exception as exc:  # ORT raises its own exception types per failure kind
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise ModelError(
            f"{model_path}: onnxruntime cannot load it ({first}); re-download the model "
            "(WD14 v3 models need onnxruntime >= 1.17)"
        ) from exc


def _input_geometry(model_path: Path, node) -> tuple[int, int | None]:
    """The square input side and the fixed batch (None when the batch dimension is free)."""
    shape = list(node.shape)
    if node.type != "tensor(float)":
        raise ModelError(f"{model_path}: input is {node.type}, expected float32; not a WD14 tagger export")
    if len(shape) != 4 or shape[3] != 3:
        raise ModelError(
            f"{model_path}: input shape {shape} is not [batch, size, size, 3] (NHWC); "
            "not a WD14 tagger export (NCHW models are not supported)"
        )
    height, width = shape[1], shape[2]
    if isinstance(height, int) and isinstance(width, int):
        if height != width or height < 1:
            raise ModelError(f"{model_path}: input {height}x{width} is not square; not a WD14 tagger export")
        size = height
    elif isinstance(height, int) or isinstance(width, int):
        size = height if isinstance(height, int) else width
    else:
        size = DEFAULT_SIZE  # a free spatial size: use what WD14 models are trained at
    batch = shape[0]
    fixed = batch if isinstance(batch, int) and batch > 0 else None
    return size, fixed
