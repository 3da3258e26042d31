"""Where the time of a whole-process audio FIR goes, phase by phase, against SoX.

    python bench/bench_audio.py [--repeats 7] [--taps 101,88200] [--seconds 180]

Each run is a cold process: ``convcli filter in.wav -k coefs.txt --convolve
-o out.wav`` exactly as the suite's SoX rows run it, but started as ``python
-c`` calling this script's ``child``, which wraps the pipeline's stages with
timers before handing the arguments to convcli's own ``main``:

    start     interpreter and site start-up, to the child's first statement
    cli       ``import convcli.cli`` (typer, click)
    numpy     ``import convcli.io`` (numpy, as the filter command's first import does)
    read      ``convcli.io.read``: soundfile's import, decoding the WAV
    kernels   resolving ``-k`` into weights (parsing the coefficient file)
    engine    the filter itself (int16 -> float is fused into it)
    samples   ``convcli.samples.to_samples``: float -> int16 with clipping
    encode    ``soundfile``'s writes: encoding and writing the WAV
    rest      everything else inside ``main``: typer's parsing, the filter command's
              imports, the atomic rename (on ext4, replacing a file flushes it: ~25 ms)
    exit      from ``main``'s return to the parent seeing the process end

Also timed, in the same rounds: ``python -c pass`` (the floor of any Python
tool here), plain ``convcli`` without the timers, and ``sox in.wav out.wav fir
coefs.txt``.  Medians over ``--repeats`` rounds; contenders take turns.  The
input is the suite's: 16-bit stereo 44.1 kHz noise.
"""
from __future__ import annotations

import json
import os
import sys
import time

# Only what the child needs is imported here: the rest of the script's
# imports would otherwise count as convcli's start-up.


def make_input(tmp, seconds: int):
    """The suite's input: band-limited-level noise, 16-bit stereo 44.1 kHz; and its two kernels."""
    import numpy as np
    import soundfile

    rng = np.random.default_rng(0)
    audio = np.clip(rng.standard_normal((seconds * 44100, 2)) * 0.15, -1, 1)
    src = tmp / "in.wav"
    soundfile.write(src, audio, 44100, subtype="PCM_16")
    fir = np.hanning(101) / np.hanning(101).sum()
    response = rng.standard_normal(88200) * np.exp(-np.arange(88200) / 20000.0)
    response /= np.abs(response).sum() / 4
    for kernel in (fir, response):
        np.savetxt(tmp / f"coefs{kernel.size}.txt", kernel, fmt="%.10g")
    return src


def child(argv: list[str]) -> None:
    """Run convcli's main on `argv` with its stages timed; write the phases as JSON to $BENCH_AUDIO_FD."""
    t0 = float(os.environ["BENCH_AUDIO_T0"])  # the -c line's first statement (CLOCK_MONOTONIC, as the parent's)
    import convcli.cli as cli
    t_cli = time.perf_counter()
    import convcli.pipeline.chain as chain
    import convcli.pipeline.filter as filtering
    import convcli.io as io
    import convcli.io.samples as samples

    spent = {name: 0.0 for name in ("read", "kernels", "filter", "samples", "encode")}

    def timer(name, fn):
        def wrapped(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - start
        return wrapped

    io.read = timer("read", io.read)
    chain.resolve_kernels = timer("kernels", chain.resolve_kernels)
    filtering.filter_signal = timer("filter", filtering.filter_signal)
    samples.to_samples = timer("samples", samples.to_samples)
    real_write = io.write

    def write(*args, **kwargs):
        import soundfile

        # The writer fills a SoundFile block by block (soundfile.write once, before).
        soundfile.write = timer("encode", soundfile.write)
        soundfile.SoundFile.write = timer("encode", soundfile.SoundFile.write)
        return real_write(*args, **kwargs)

    io.write = write
    start_main = time.perf_counter()  # convcli.io above has imported numpy: the "numpy" phase
    code = cli.main(argv)
    end = time.perf_counter()
    phases = {
        "cli": t_cli - t0,
        "numpy": start_main - t_cli,
        "read": spent["read"],
        "kernels": spent["kernels"],
        "engine": spent["filter"] - spent["kernels"],
        "samples": spent["samples"],
        "encode": spent["encode"],
    }
    phases["rest"] = (end - start_main) - sum(v for k, v in phases.items() if k not in ("cli", "numpy"))
    with os.fdopen(int(os.environ["BENCH_AUDIO_FD"]), "w") as report:
        json.dump({"phases": phases, "first_line": t0, "main_end": end, "code": code}, report)
    # Exit as convcli does, so the interpreter's teardown is in the parent's wall clock.


def timed_child(argv: list[str], cwd) -> dict:
    """One cold child run: its phases, plus start (before its first line) and exit (after main)."""
    import subprocess
    from pathlib import Path

    read_end, write_end = os.pipe()
    cmd = [sys.executable, "-c", "import os, sys, time; os.environ['BENCH_AUDIO_T0'] = repr(time.perf_counter()); "
           "sys.path.insert(0, sys.argv[1]); import bench_audio; bench_audio.child(sys.argv[2:])",
           str(Path(__file__).parent), *argv]
    start = time.perf_counter()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["BENCH_AUDIO_FD"] = str(write_end)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=cwd,
                            pass_fds=(write_end,), env=env)
    os.close(write_end)
    data = os.read(read_end, 1 << 16)
    proc.wait()
    stop = time.perf_counter()
    wall = stop - start
    os.close(read_end)
    if proc.returncode:
        raise SystemExit(f"convcli failed ({proc.returncode}): {proc.stderr.read().decode().strip()}")
    proc.stderr.close()
    got = json.loads(data)
    phases = got["phases"]
    # perf_counter is CLOCK_MONOTONIC, one clock for parent and child: start-up is
    # the parent's start to the child's first statement, exit its main's end to
    # the parent seeing the process gone.  The import of this script (argparse,
    # json, subprocess: ~10 ms) lands in "cli"; it is not convcli's.
    phases["start"] = got["first_line"] - start
    phases["exit"] = stop - got["main_end"]
    phases["wall"] = wall
    return phases


def timed(cmd: list[str], cwd) -> float:
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    start = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=cwd, env=env, check=True)
    return time.perf_counter() - start


def main(argv=None) -> int:
    import argparse
    import shutil
    import statistics
    import tempfile
    from pathlib import Path

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--taps", default="101,88200", help="comma-separated: 101 and/or 88200")
    parser.add_argument("--seconds", type=int, default=180)
    args = parser.parse_args(argv)
    print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; medians of {args.repeats} cold runs")
    with tempfile.TemporaryDirectory(prefix="convcli-audio-") as tmp:
        tmp = Path(tmp)
        src = make_input(tmp, args.seconds)
        for taps in (int(t) for t in args.taps.split(",")):
            coefs = tmp / f"coefs{taps}.txt"
            ours = ["filter", str(src), "-k", str(coefs), "--convolve", "-o", str(tmp / "convcli.wav")]
            plain = [sys.executable, "-m", "convcli", *ours]
            sox = ["sox", str(src), str(tmp / "sox.wav"), "fir", str(coefs)] if shutil.which("sox") else None
            timed_child(ours, tmp)  # warm the page cache and byte-code
            rows: dict[str, list[float]] = {}
            for _ in range(args.repeats):
                for name, value in timed_child(ours, tmp).items():
                    rows.setdefault(name, []).append(value)
                rows.setdefault("python -c pass", []).append(timed([sys.executable, "-c", "pass"], tmp))
                rows.setdefault("convcli (no timers)", []).append(timed(plain, tmp))
                if sox:
                    rows.setdefault("SoX", []).append(timed(sox, tmp))
            print(f"\n{taps}-tap FIR, {args.seconds} s stereo 16-bit WAV")
            for name, values in rows.items():
                print(f"  {name:22s} {statistics.median(values) * 1e3:8.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
