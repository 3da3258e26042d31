"""Classify one photo: a pure, picklable function from (file, options) to a result record.

``classify_file`` is the whole per-image job (read the photo, run the
network, rank, optionally write the class-activation map), so a batch can
schedule it in worker processes; ``classify_frames`` does the same for a
video's frames, one every few seconds.  The network is loaded once per
process and kept; nothing here prints.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace

from ..errors import UsageError
from .options import ClassifyOptions


@dataclass
class ClassifyResult:
    """What one image gave: its top predictions, and the CAM file if one was written."""

    file: str
    predictions: list = field(default_factory=list)  # convcli.nn.predictions.Prediction, best first
    cam: str | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict:
        """The JSON form: ``{"file": ..., "predictions": [{"index", "label", "probability"}, ...]}``."""
        record = {"file": self.file, "predictions": [asdict(p) for p in self.predictions],
                  "seconds": round(self.seconds, 6)}
        if self.cam is not None:
            record["cam"] = self.cam
        return record


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
    from ..io.photo import read_photo
    from ..nn.predictions import classify_photo
    from ..nn.preprocess import Photo
    from ..nn.weights import pretrained_model

    start = time.perf_counter()
    rgb, name = read_photo(source, options.max_pixels)
    photo = Photo.of(rgb)
    model = pretrained_model()
    predictions, features = classify_photo(photo, model, options.top)
    if options.cam is not None:
        write_cam(options.cam, photo, model.class_activation_map(features, predictions[0].index))
    return ClassifyResult(name, predictions, options.cam, time.perf_counter() - start)


def write_cam(dest: str, photo, cam) -> None:
    """The class-activation map laid over the photo, written as a PNG at ``dest``, atomically."""
    from .. import io
    from ..nn.cam import overlay

    picture = io.Signal(overlay(photo, cam), kind="image", channel_axis=-1,
                        meta={"format": "png", "mode": "RGB", "dtype": "uint8"})
    io.write(picture, dest, format="png")


def classify_job(source: str, cam: str | None, options: ClassifyOptions) -> dict:
    """One image as a batch job: ``(input, CAM output or None, options) -> record``; raises like :func:`classify_file`.

    A video's record holds ``frames``, one record per frame classified (see :func:`classify_frames`).
    """
    if is_video(source):
        return {"file": str(source), "frames": list(classify_frames(source, options))}
    return classify_file(source, replace(options, cam=cam)).as_dict()


def is_video(source: str) -> bool:
    """Whether ``source`` is a video file, by its content (stdin is never one here: it is read as a photo)."""
    from ..io.formats import family_of
    from .batch import media_format

    return str(source) != "-" and family_of(media_format(str(source))) == "video"


def classify_frames(source: str, options: ClassifyOptions = ClassifyOptions()):
    """Classify a video's frames, one every ``options.every`` seconds from its first, as they are decoded.

    Yields ``{"file", "time", "frame", "predictions"}`` per frame classified:
    its time in seconds from the first frame, its index, and its top classes.
    The frames are turned upright by the clip's rotation, as a photo by its
    EXIF orientation.
    """
    from ..io.detect import detect
    from ..io.files import Source
    from ..io.limits import Limits
    from ..io.video import VideoReader, picture_rgb
    from ..nn.predictions import classify_photo
    from ..nn.preprocess import Photo
    from ..nn.weights import pretrained_model

    if options.cam is not None:
        raise UsageError("a class-activation map is drawn over a photo, not a video", subject="--cam")
    src = Source.open_input(source)
    model = pretrained_model()
    with VideoReader(src, detect(src), limits=Limits(options.max_pixels)) as reader:
        first, due = None, 0.0
        for index, picture in enumerate(reader.pictures()):
            first = picture.pts if first is None else first
            seconds = float((picture.pts - first) * reader.info.time_base)
            if seconds + 1e-9 < due:
                continue
            while due <= seconds + 1e-9:
                due += options.every  # on a grid from the first frame, whatever the frame timing
            rgb = picture_rgb(picture, reader.info, upright=True)
            predictions, _ = classify_photo(Photo.of(rgb), model, options.top)
            yield {"file": src.name, "time": round(seconds, 6), "frame": index,
                   "predictions": [asdict(p) for p in predictions]}
