"""Whole-process video filtering against FFmpeg: wall time, frames per second and peak memory.

    python bench/bench_video.py [--seconds 60] [--repeats 3] [--workdir /tmp/convcli-video-bench] [--only NAME]

The input is made once with ffmpeg (kept in --workdir): ``--seconds`` of
1080p30 H.264 (High, yuv420p, crf 20) panning across ``examples/photo.jpg``
with a little temporal noise, as a camera's, and an AAC soundtrack.  Every
command re-encodes with the same encoder settings, libx264 at its defaults
(crf 23, preset medium), and copies the audio:

    gaussian sigma 2 per frame   convcli -k gaussian:sigma=2      ffmpeg -vf gblur=sigma=2
    3-frame temporal mean        convcli -k box:3,1,1             ffmpeg -vf tmix=frames=3
    box 3x3x3                    convcli -k box:3,3,3             (FFmpeg has no equivalent)
    random 3x3x3                 convcli -k random3.npy           (FFmpeg has no equivalent)

Rounds alternate the two tools (A B A B ...), so a drift in the machine's
speed touches both; the table shows medians and the median of the pairwise
ratios (convcli / ffmpeg, below 1 is faster).  Peak memory is the process's
maximum resident set (``wait4``).  FFmpeg is a peer for the benchmark only,
never a dependency.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENCODE = ["-c:v", "libx264", "-crf", "23", "-preset", "medium", "-c:a", "copy"]


def make_clip(path: Path, seconds: int) -> None:
    """A 1080p30 clip of a slow pan over the example photo, with light temporal noise and a sine soundtrack."""
    photo = ROOT / "examples" / "photo.jpg"
    pan = ("scale=3840:-2,zoompan=z='1.2+0.1*sin(on/90)':x='iw/2-(iw/zoom/2)+200*sin(on/70)'"
           ":y='ih/2-(ih/zoom/2)+100*cos(on/50)':d=1:s=1920x1080:fps=30,noise=alls=6:allf=t,format=yuv420p")
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-loop", "1", "-framerate", "30", "-i", str(photo),
                    "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-filter_complex", f"[0:v]{pan}[v]",
                    "-map", "[v]", "-map", "1:a", "-t", str(seconds), "-c:v", "libx264", "-preset", "veryfast",
                    "-crf", "20", "-c:a", "aac", "-b:a", "128k", str(path)], check=True)


def frame_count(path: Path) -> int:
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_packets", "-show_entries",
                          "stream=nb_read_packets", "-of", "csv=p=0", str(path)], capture_output=True, text=True,
                         check=True)
    return int(out.stdout.strip())


def timed(command: list[str]) -> tuple[float, float, int]:
    """Run ``command``; return (wall seconds, CPU seconds, peak resident MiB) of the whole process."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    stderr = process.stderr.read().decode("utf-8", "replace")
    process.stderr.close()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{' '.join(command)} failed ({code}): {stderr.strip()}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss // 1024


def workloads(work: Path, clip: Path) -> list[tuple[str, list[str], list[str] | None]]:
    import numpy as np

    kernel = work / "random3.npy"
    np.save(kernel, np.random.default_rng(0).standard_normal((3, 3, 3)) / 27 + 1 / 27)
    convcli = [sys.executable, "-m", "convcli", "filter", str(clip), "-q", "-o", str(work / "convcli.mp4")]
    ffmpeg = ["ffmpeg", "-v", "error", "-y", "-i", str(clip)]
    return [
        ("gaussian sigma 2 per frame", convcli + ["-k", "gaussian:sigma=2"],
         ffmpeg + ["-vf", "gblur=sigma=2", *ENCODE, str(work / "ffmpeg.mp4")]),
        ("3-frame temporal mean", convcli + ["-k", "box:3,1,1"],
         ffmpeg + ["-vf", "tmix=frames=3", *ENCODE, str(work / "ffmpeg.mp4")]),
        ("box 3x3x3", convcli + ["-k", "box:3,3,3"], None),
        ("random 3x3x3", convcli + ["-k", str(kernel)], None),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", default="/tmp/convcli-video-bench")
    parser.add_argument("--only", default=None, help="run the workloads whose name holds this text")
    args = parser.parse_args(argv)
    if shutil.which("ffmpeg") is None:
        raise SystemExit("bench_video needs ffmpeg (for the input clip and as the peer)")
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    clip = work / f"clip{args.seconds}s.mp4"
    if not clip.exists():
        make_clip(clip, args.seconds)
    frames = frame_count(clip)
    env_note = f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}"
    print(f"input: {clip.name}, {frames} frames of 1920x1080, {clip.stat().st_size / 1e6:.0f} MB; {env_note}")
    print("| workload | convcli wall | fps | CPU | peak | FFmpeg wall | CPU | peak | convcli / FFmpeg |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, ours, peer in workloads(work, clip):
        if args.only and args.only not in name:
            continue
        mine, theirs = [], []
        for _ in range(args.repeats):
            mine.append(timed(ours))
            if peer is not None:
                theirs.append(timed(peer))
        wall = statistics.median(m[0] for m in mine)
        row = (f"| {name} | {wall:.1f} s | {frames / wall:.1f} | {statistics.median(m[1] for m in mine):.1f} s | "
               f"{max(m[2] for m in mine)} MiB |")
        if theirs:
            peer_wall = statistics.median(t[0] for t in theirs)
            ratio = statistics.median(m[0] / t[0] for m, t in zip(mine, theirs))
            row += (f" {peer_wall:.1f} s | {statistics.median(t[1] for t in theirs):.1f} s | "
                    f"{max(t[2] for t in theirs)} MiB | {ratio:.2f} |")
        else:
            row += " — | — | — | — |"
        print(row, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
