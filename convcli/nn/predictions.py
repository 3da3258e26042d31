"""From the network's outputs to named predictions: ImageNet labels, softmax, the top k."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .preprocess import Photo, network_input


@dataclass(frozen=True)
class Prediction:
    index: int  # ImageNet class index, 0..999
    label: str
    probability: float


@lru_cache(maxsize=1)
def class_labels() -> tuple[str, ...]:
    """The 1000 ImageNet class names, in the network's output order."""
    from importlib.resources import files

    text = files(__package__).joinpath("imagenet_classes.txt").read_text(encoding="utf-8")
    labels = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(labels) != 1000:  # the file ships with the package; anything else is a broken install
        raise RuntimeError(f"imagenet_classes.txt holds {len(labels)} labels, not 1000")
    return labels


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
