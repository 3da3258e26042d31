"""Chunked volumes: a Zarr volume against the same volume in memory, and against dask-image on the same chunks.

    python bench/bench_scale.py make DIR [--side-z 256]   # DIR/vol.zarr (64^3 chunks, zstd), vol_raw.zarr, vol.npy
    python bench/bench_scale.py run DIR [-n 3] [--pairs memory,dask-image,budget,raw,raw-dask-image]
    python bench/bench_scale.py make-tiff DIR [--side 20000]   # DIR/big.tif: RGB uint8 tiled BigTIFF, Deflate
    python bench/bench_scale.py run-tiff DIR [-n 3] [--kernel gaussian|sobel]  # against vips on the same file

Pairs (each A/B taken run by run by ``farm-bench``):

1. ``convcli filter vol.zarr -k gaussian:sigma=2`` against ``convcli filter vol.npy`` (one process, in memory);
2. the same chunked run against ``dask_image.ndfilters.gaussian_filter`` (sigma 2, mode mirror = our reflect,
   truncate 4 = our radius) on a Dask array over the same .npy with the same chunks, threaded scheduler, stored
   into a .npy (dask-image runs in the peers' venv, /work/peers, which has no zarr);
3. peak memory of the chunked run with ``--memory-budget 128M``;
4. (``raw``, ``raw-dask-image``) pairs 1 and 2 from ``vol_raw.zarr``, the same volume uncompressed: what the
   chunked run costs without zstd, which the in-memory ``.npy`` and dask-image's ``.npy`` do not pay.

Peers are yardsticks, never dependencies.  The volume is float32, 512 x 512 x SIDE_Z.

The ``tiff`` group: a SIDE x SIDE RGB uint8 BigTIFF in 256 x 256 Deflate tiles (a smooth pattern plus noise,
written tile by tile), filtered by ``convcli filter big.tif -k gaussian:sigma=2 -o out.tif`` (read chunked,
as it is over the default memory budget, and written as a tiled BigTIFF in the input's layout, uint8) against
``vips gaussblur big.tif v.tif[tile,bigtiff,compression=deflate] 2`` (uchar out, vips' default integer
precision and min-ampl 0.2: a shorter kernel than scipy's truncate 4), and ``-k sobel`` against ``vips sobel``
(both write uint8).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys

PEERS_PYTHON = "/work/peers/bin/python"
CHUNK = 64

DASK_IMAGE = """
import sys, numpy as np, dask.array as da
from dask_image.ndfilters import gaussian_filter
src, dst, chunk = sys.argv[1], sys.argv[2], int(sys.argv[3])
x = np.load(src, mmap_mode="r")
y = gaussian_filter(da.from_array(x, chunks=chunk), sigma=2, mode="mirror", truncate=4.0)
out = np.lib.format.open_memmap(dst, mode="w+", dtype=np.float32, shape=x.shape)
da.store(y, out, scheduler="threads")
"""


def make(folder: str, side_z: int) -> None:
    import numpy as np
    import zarr

    os.makedirs(folder, exist_ok=True)
    shape = (side_z, 512, 512)
    rng = np.random.default_rng(0)
    volume = np.lib.format.open_memmap(os.path.join(folder, "vol.npy"), mode="w+", dtype=np.float32, shape=shape)
    arrays = [zarr.create_array(os.path.join(folder, name), shape=shape, chunks=(CHUNK,) * 3, dtype="f4",
                                overwrite=True, **({} if name == "vol.zarr" else {"compressors": None}))
              for name in ("vol.zarr", "vol_raw.zarr")]
    for z in range(0, side_z, CHUNK):
        block = rng.standard_normal((min(CHUNK, side_z - z), 512, 512)).astype(np.float32)
        volume[z:z + len(block)] = block
        for array in arrays:
            array[z:z + len(block)] = block
    volume.flush()
    with open(os.path.join(folder, "dask_image_gaussian.py"), "w") as fh:
        fh.write(DASK_IMAGE)


PAIRS = ("memory", "dask-image", "budget", "raw", "raw-dask-image")


def run(folder: str, runs: int, pairs: list[str]) -> None:
    convcli = f"{sys.executable} -m convcli filter"
    zarr_in, npy_in = os.path.join(folder, "vol.zarr"), os.path.join(folder, "vol.npy")
    zarr_out, npy_out = os.path.join(folder, "out.zarr"), os.path.join(folder, "out.npy")
    chunked = f"rm -rf {zarr_out}; {convcli} {zarr_in} -k gaussian:sigma=2 -o {zarr_out}"
    raw = chunked.replace(zarr_in, os.path.join(folder, "vol_raw.zarr"))
    budget = chunked + " --memory-budget 128M"
    in_memory = f"{convcli} {npy_in} -k gaussian:sigma=2 -o {npy_out}"
    peer = f"{PEERS_PYTHON} {os.path.join(folder, 'dask_image_gaussian.py')} {npy_in} {npy_out} {CHUNK}"
    table = {"memory": (chunked, in_memory), "dask-image": (chunked, peer), "budget": (budget, in_memory),
             "raw": (raw, in_memory), "raw-dask-image": (raw, peer)}
    for a, b in (table[p] for p in pairs):
        print(f"\n$ farm-bench -n {runs} --warmup 0 --timeout 3600 --vs \"sh -c '{b}'\" -- sh -c '{a}'", flush=True)
        subprocess.run(["farm-bench", "-n", str(runs), "--warmup", "0", "--timeout", "3600", "--vs", f"sh -c '{b}'",
                        "--", "sh", "-c", a], check=False)
    shutil.rmtree(zarr_out, ignore_errors=True)


TILE = 256


def make_tiff(folder: str, side: int) -> None:
    """A side x side RGB uint8 tiled BigTIFF, generated and written one tile at a time (never whole in memory)."""
    import numpy as np
    import tifffile

    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:TILE, 0:TILE].astype(np.float32)

    def tiles():
        for top in range(0, side, TILE):
            for left in range(0, side, TILE):
                yy, xx = (y + top) / 700.0, (x + left) / 900.0
                smooth = np.stack([np.sin(yy) * np.cos(xx), np.sin(xx + yy), np.cos(yy * 1.3 - xx)], axis=-1)
                noise = rng.normal(0, 12, (TILE, TILE, 3))
                yield np.clip(128 + 90 * smooth + noise, 0, 255).astype(np.uint8)

    with tifffile.TiffWriter(os.path.join(folder, "big.tif"), bigtiff=True) as writer:
        writer.write(tiles(), shape=(side, side, 3), dtype=np.uint8, tile=(TILE, TILE), compression="zlib",
                     photometric="rgb", maxworkers=2)


def run_tiff(folder: str, runs: int, kernel: str) -> None:
    big = os.path.join(folder, "big.tif")
    ours, theirs = os.path.join(folder, "out.tif"), os.path.join(folder, "v.tif")
    spec, vips = {"gaussian": ("gaussian:sigma=2", "gaussblur {src} {dst}[tile,bigtiff,compression=deflate] 2"),
                  "sobel": ("sobel", "sobel {src} {dst}[tile,bigtiff,compression=deflate]")}[kernel]
    a = f"{sys.executable} -m convcli filter {big} -k {spec} -o {ours}"
    b = "vips " + vips.format(src=big, dst=theirs)
    print(f"\n$ farm-bench -n {runs} --warmup 0 --timeout 3600 --vs \"{b}\" -- {a}", flush=True)
    subprocess.run(["farm-bench", "-n", str(runs), "--warmup", "0", "--timeout", "3600", "--vs", b, "--", *a.split()],
                   check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("make", "run", "make-tiff", "run-tiff"))
    parser.add_argument("folder")
    parser.add_argument("--side-z", type=int, default=1024)
    parser.add_argument("--side", type=int, default=20000)
    parser.add_argument("--kernel", choices=("gaussian", "sobel"), default="gaussian")
    parser.add_argument("-n", type=int, default=3)
    parser.add_argument("--pairs", default="memory,dask-image,budget",
                        help=f"comma-separated, of {', '.join(PAIRS)}")
    args = parser.parse_args()
    pairs = [p.strip() for p in args.pairs.split(",") if p.strip()]
    if any(p not in PAIRS for p in pairs):
        parser.error(f"--pairs takes {', '.join(PAIRS)}")
    if args.action == "make":
        make(args.folder, args.side_z)
    elif args.action == "run":
        run(args.folder, args.n, pairs)
    elif args.action == "make-tiff":
        make_tiff(args.folder, args.side)
    else:
        run_tiff(args.folder, args.n, args.kernel)


if __name__ == "__main__":
    main()
