"""Classify one photo: a pure, picklable function from (file, options) to a result record.

``classify_file`` is the whole per-image job (read, preprocess, run the
network, rank, optionally write the class-activation map), so a batch runner
can schedule it in worker processes.  The network is loaded once per process
and kept; nothing here prints.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache

import numpy as np

from ..errors import ParameterError
from .preprocess import DEFAULT_MAX_PIXELS, Photo, network_input, open_photo

MAX_IMAGE_BYTES = 512 << 20  # a photo file larger than this is refused before it is read


@dataclass(frozen=True)
class ClassifyOptions:
    """What to compute for each image."""

    top: int = 5  # predictions reported per image, highest probability first
    cam: str | None = None  # where to write the class-activation map (PNG), or None
    max_pixels: int = DEFAULT_MAX_PIXELS  # larger images are refused before decoding

    def __post_init__(self) -> None:
        if isinstance(self.top, bool) or not isinstance(self.top, int) or not 1 <= self.top <= 1000:
            raise ParameterError(f"must be a whole number from 1 to 1000, got {self.top!r}", subject="top")


@dataclass(frozen=True)
class Prediction:
    index: int  # ImageNet class index, 0..999
    label: str
    probability: float


@dataclass
class ClassifyResult:
    """What one image gave: its top predictions, and the CAM file if one was written."""

    file: str
    predictions: list[Prediction] = field(default_factory=list)
    cam: str | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict:
        """The JSON form: ``{"file": ..., "predictions": [{"index", "label", "probability"}, ...]}``."""
        record = {"file": self.file, "predictions": [asdict(p) for p in self.predictions]}
        if self.cam is not None:
            record["cam"] = self.cam
        return record


@lru_cache(maxsize=1)
def class_labels() -> tuple[str, ...]:
    """The 1000 ImageNet class names, in the network's output order."""
    from importlib.resources import files

    text = files(__package__).joinpath("imagenet_classes.txt").read_text(encoding="utf-8")
    labels = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(labels) != 1000:  # the file ships with the package; anything else is a broken install
        raise RuntimeError(f"imagenet_classes.txt holds {len(labels)} labels, not 1000")
    return labels


_MODELS: dict[tuple, object] = {}


def pretrained_model():
    """The pretrained network, loaded once per process (and per weights file)."""
    from .weights import fingerprint, load_model, source_path

    source = source_path()
    key = tuple(fingerprint(source))
    model = _MODELS.get(key)
    if model is None:
        _MODELS.clear()
        model = _MODELS[key] = load_model(source=source)
    return model


def softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities from logits along the last axis, computed in float64 so they sum to 1."""
    z = np.asarray(logits, dtype=np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def top_predictions(logits: np.ndarray, k: int) -> list[Prediction]:
    """The ``k`` most probable classes of one image's logits, highest first (ties: lower index first)."""
    probs = softmax(logits)
    order = np.lexsort((np.arange(probs.size), -probs))[:k]
    labels = class_labels()
    return [Prediction(int(i), labels[i], float(probs[i])) for i in order]


def classify_photo(photo: Photo, model, top: int) -> tuple[list[Prediction], np.ndarray]:
    """Run the network on one photo: its top predictions and its last feature maps ``(1280, 7, 7)``."""
    features = model.features(network_input(photo)[None])
    logits = model.classifier(features)[0]
    return top_predictions(logits, top), features[0]


def classify_file(source: str, options: ClassifyOptions = ClassifyOptions()) -> ClassifyResult:
    """Classify the image at ``source`` (a path, or ``-`` for stdin) and return its record.

    Raises
    ------
    DataError
        The file is missing, not an image, corrupt or over the pixel limit; or
        the weights are missing or refused (subject: the weights file).
    OutputError
        The class-activation map could not be written.
    """
    from ..io.files import Source

    start = time.perf_counter()
    src = Source.open_input(source, max_bytes=MAX_IMAGE_BYTES)
    data = src.data if src.data is not None else _read_file(src)
    photo = open_photo(data, src.name, options.max_pixels)
    model = pretrained_model()
    predictions, features = classify_photo(photo, model, options.top)
    cam_path = None
    if options.cam is not None:
        from .cam import write_cam

        best = predictions[0].index
        write_cam(options.cam, photo, model.class_activation_map(features, best))
        cam_path = options.cam
    return ClassifyResult(src.name, predictions, cam_path, time.perf_counter() - start)


def classify_job(source: str, cam: str | None, options: ClassifyOptions) -> dict:
    """One image as a batch job: ``(input, CAM output or None, options) -> record``; raises like :func:`classify_file`."""
    from dataclasses import replace

    return classify_file(source, replace(options, cam=cam)).as_dict()


def _read_file(src) -> bytes:
    from ..errors import DataError

    if src.size > MAX_IMAGE_BYTES:
        raise DataError(f"is {src.size:,} bytes; image files over {MAX_IMAGE_BYTES:,} bytes are refused", subject=src.name)
    with src.open() as fh:
        try:
            return fh.read(MAX_IMAGE_BYTES + 1)
        except OSError as exc:
            raise DataError(exc.strerror or str(exc), subject=src.name) from None
