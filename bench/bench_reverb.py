"""Convolution reverb and resampling, whole process, against FFmpeg's afir, SoX and scipy's resample_poly.

    python bench/bench_reverb.py [--repeats 5] [--minutes 10] [--only reverb,resample,quality]
    python bench/bench_reverb.py --only long --hours 10 [--tmp /tmp] [--memory-budget 1G]

Each contender is a fresh process, timed with its CPU and peak memory (wait4), contenders taking turns,
medians of ``--repeats`` rounds; ratio = convcli / peer (below 1: convcli is faster).  Peers are for
benchmarking only: ``apt-get install ffmpeg sox``; scipy is convcli's own dependency.

reverb     a 3 s stereo impulse response (decaying noise, 48 kHz) on ``--minutes`` of 48 kHz stereo
           16-bit WAV:  ``convcli filter in.wav -k ir:hall.wav --ir-norm none -o out.wav``  against
           ``ffmpeg -i in.wav -i hall.wav -filter_complex afir=gtype=none:irfmt=input out.wav``
           (channel by channel, causal, cut at the input's end: the same output, up to afir's own
           gain, which is fitted and said).  And a mono 3 s response on the same audio against
           ``sox in.wav out.wav fir hall.txt``: SoX's ``fir`` applies one response to every channel
           and centres it (a linear-phase filter's delay taken out), so convcli runs it as
           ``-k hall.txt --convolve`` and the outputs are compared sample for sample.
resample   48 kHz -> 44.1 kHz of the same audio: ``convcli filter in.wav --rate 44100``, ``sox in.wav
           -r 44100 out.wav rate -h`` and a Python script (soundfile.read, scipy.signal.resample_poly
           with its default filter, soundfile.write).
quality    each resampler on 32-bit float inputs: the passband ripple (40 tones from 100 Hz to 95 % of
           22.05 kHz, each tone's level fitted), the stopband attenuation (tones from 22.1 to 23.9 kHz:
           the loudest alias they leave below 22.05 kHz) and a sweep from 21 to 24 kHz (the energy it
           leaves below 20 kHz, against the sweep's own).
long       peak memory of ``convcli filter`` on ``--hours`` of 96 kHz stereo 16-bit audio (an RF64 WAV
           written to ``--tmp``: 10 hours are 13.8 GB, and the output as much again) with a 3 s
           response, over the memory budget (read, filtered and written in blocks), beside the same
           run on a tenth of the length: memory flat in the length.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONVCLI = [sys.executable, "-m", "convcli"]

RESAMPLE_POLY = """
import sys, soundfile
from scipy.signal import resample_poly
x, rate = soundfile.read(sys.argv[1], dtype="float32")
info = soundfile.info(sys.argv[1])
soundfile.write(sys.argv[2], resample_poly(x, 147, 160, axis=0), 44100, subtype=info.subtype)
"""


# ---------------------------------------------------------------------------- inputs
def music(seconds: float, rate: int, rng) -> np.ndarray:
    """Stereo 'music': a few tones and pink-ish noise, peaks near -6 dBFS."""
    import soundfile  # noqa: F401  (the caller writes it)

    n = int(seconds * rate)
    t = np.arange(n) / rate
    out = np.empty((n, 2), np.float32)
    for c in range(2):
        tones = sum(0.08 * np.sin(2 * np.pi * f * t + c) for f in (110, 220 * (1 + 0.01 * c), 660, 1760))
        noise = np.cumsum(rng.standard_normal(n)) * 0.002
        noise -= np.convolve(noise, np.ones(2001) / 2001, mode="same")
        out[:, c] = tones + noise
    return out


def hall(seconds: float, rate: int, channels: int, rng) -> np.ndarray:
    """A decaying noise response (60 dB down in about 2 s), first tap the direct sound; energy about 0.25.

    Quiet enough that neither convcli (--ir-norm none) nor afir clips the music through it: clipped
    samples would hide how far the two outputs are apart.
    """
    n = int(seconds * rate)
    decay = np.exp(-np.arange(n) / (rate * 2 / 6.9))
    h = rng.standard_normal((n, channels)) * decay[:, None] * 0.005
    h[0] = 0.25
    return h.astype(np.float32)


def write_inputs(tmp: Path, minutes: float) -> dict:
    import soundfile

    rng = np.random.default_rng(18)
    paths = {"in": tmp / "in.wav", "hall": tmp / "hall.wav", "mono": tmp / "hall_mono.wav", "txt": tmp / "hall.txt"}
    x = music(minutes * 60, 48000, rng)
    soundfile.write(paths["in"], x, 48000, subtype="PCM_16")
    soundfile.write(paths["hall"], hall(3, 48000, 2, rng), 48000, subtype="FLOAT")
    # One zero tap more makes the length odd: its centre is then one sample, the same for SoX and convcli.
    mono = np.append(hall(3, 48000, 1, rng)[:, 0], np.float32(0))
    soundfile.write(paths["mono"], mono, 48000, subtype="FLOAT")
    np.savetxt(paths["txt"], mono, fmt="%.9g")
    return paths


# ---------------------------------------------------------------------------- timing
def run(cmd: list[str], cwd: Path) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds and peak memory (MiB) of one run of `cmd`.

    The peak is GNU time's (``/usr/bin/time -f %M``) when it is installed: a child forked from this
    process carries this process's own high-water mark through exec (wait4 would report the 1.5 GB
    the inputs took to make for every contender), while time's child starts from time's few MiB.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    memory = Path(cwd) / "peak.txt"
    timed = ["/usr/bin/time", "-f", "%M", "-o", str(memory)] + cmd if Path("/usr/bin/time").exists() else cmd
    start = time.perf_counter()
    child = subprocess.Popen(timed, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=cwd, env=env)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    err = child.stderr.read().decode(errors="replace")
    child.stderr.close()
    if status != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed: {err.strip()}")
    peak = int(memory.read_text().split()[-1]) / 1024 if timed is not cmd else usage.ru_maxrss / 1024
    return wall, usage.ru_utime + usage.ru_stime, peak


def race(contenders: dict, repeats: int, cwd: Path) -> dict:
    """Median wall, CPU and peak memory of every contender, taking turns; one warm-up each."""
    for cmd in contenders.values():
        run(cmd, cwd)
    times = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, cmd in contenders.items():
            times[name].append(run(cmd, cwd))
    return {name: tuple(statistics.median(v[i] for v in values) for i in range(3)) for name, values in times.items()}


def table(title: str, medians: dict, reference: str = "convcli") -> None:
    print(f"\n{title}")
    print(f"  {'tool':44s} {'wall':>8s} {'cpu':>8s} {'peak':>9s} {'convcli/tool':>13s}")
    base = medians[reference][0]
    for name, (wall, cpu, peak) in medians.items():
        print(f"  {name:44s} {wall:7.2f}s {cpu:7.2f}s {peak:6.0f} MiB {base / wall:12.2f}")


def agreement(ours: Path, theirs: Path, fit_gain: bool) -> str:
    """How far two outputs are apart: the largest difference against the peak, after fitting a gain if asked."""
    import soundfile

    a = soundfile.read(ours, dtype="float64")[0]
    b = soundfile.read(theirs, dtype="float64")[0]
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    gain = float(np.vdot(a, b) / np.vdot(b, b)) if fit_gain else 1.0
    worst = float(np.abs(a - gain * b).max())
    lsb = worst * 32768
    text = f"largest difference {lsb:.1f} LSB of 16 bits ({20 * np.log10(max(worst, 1e-12) / np.abs(a).max()):.0f} dB)"
    return text + (f", after a gain of {gain:.4f} on the peer's output" if fit_gain else "")


# ---------------------------------------------------------------------------- rows
def reverb(paths: dict, repeats: int, tmp: Path, minutes: float) -> None:
    src = paths["in"]
    contenders = {
        "convcli -k ir:hall.wav (3 s stereo response)":
            CONVCLI + ["filter", str(src), "-k", f"ir:{paths['hall']}", "--ir-norm", "none", "-o", str(tmp / "c.wav")],
        "ffmpeg afir (channel by channel)":
            ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i", str(src), "-i", str(paths["hall"]),
             "-filter_complex", "[0:a][1:a]afir=gtype=none:irfmt=input", "-c:a", "pcm_s16le", str(tmp / "f.wav")],
    }
    if not shutil.which("ffmpeg"):
        contenders.pop("ffmpeg afir (channel by channel)")
    medians = race(contenders, repeats, tmp)
    table(f"reverb: 3 s stereo impulse response, {minutes:g} min of 48 kHz stereo 16-bit", medians,
          "convcli -k ir:hall.wav (3 s stereo response)")
    if len(contenders) > 1:
        print("  output vs afir:", agreement(tmp / "c.wav", tmp / "f.wav", fit_gain=True))
    if shutil.which("sox"):
        mono = {
            "convcli -k hall.txt --convolve (mono, centred)":
                CONVCLI + ["filter", str(src), "-k", str(paths["txt"]), "--convolve", "--pad-mode", "zeros",
                           "-o", str(tmp / "cm.wav")],
            "sox fir hall.txt": ["sox", str(src), str(tmp / "s.wav"), "fir", str(paths["txt"])],
        }
        medians = race(mono, repeats, tmp)
        table("the same with a 3 s mono response, as SoX's fir takes it", medians,
              "convcli -k hall.txt --convolve (mono, centred)")
        print("  output vs SoX:", agreement(tmp / "cm.wav", tmp / "s.wav", fit_gain=False))


def resample(paths: dict, repeats: int, tmp: Path, minutes: float) -> None:
    src = paths["in"]
    contenders = {
        "convcli --rate 44100": CONVCLI + ["filter", str(src), "--rate", "44100", "-o", str(tmp / "r_c.wav")],
        "sox rate -h": ["sox", str(src), "-r", "44100", str(tmp / "r_s.wav"), "rate", "-h"],
        "python: scipy resample_poly": [sys.executable, "-c", RESAMPLE_POLY, str(src), str(tmp / "r_p.wav")],
    }
    if not shutil.which("sox"):
        contenders.pop("sox rate -h")
    table(f"resampling 48 kHz -> 44.1 kHz, {minutes:g} min stereo 16-bit", race(contenders, repeats, tmp), "convcli --rate 44100")


def quality(tmp: Path) -> None:
    """Passband ripple, stopband attenuation and a sweep's aliases of every resampler, on float inputs."""
    import soundfile

    rate, seconds = 48000, 4
    t = np.arange(rate * seconds) / rate
    passband = np.geomspace(100, 0.95 * 22050, 40)
    stopband = np.linspace(22100, 23900, 10)
    signals = {
        "pass": sum(0.01 * np.sin(2 * np.pi * f * t + i) for i, f in enumerate(passband)),
        "stop": sum(0.05 * np.sin(2 * np.pi * f * t + i) for i, f in enumerate(stopband)),
        "sweep": 0.5 * np.sin(2 * np.pi * (21000 * t + 3000 / (2 * seconds) * t ** 2)),
    }
    tools = {
        "convcli --rate 44100": lambda s, d: CONVCLI + ["filter", str(s), "--rate", "44100", "-o", str(d)],
        "sox rate -h": lambda s, d: ["sox", str(s), "-r", "44100", str(d), "rate", "-h"],
        "scipy resample_poly (default filter)": lambda s, d: [sys.executable, "-c", RESAMPLE_POLY, str(s), str(d)],
    }
    if not shutil.which("sox"):
        tools.pop("sox rate -h")
    results = {}
    for kind, x in signals.items():
        soundfile.write(tmp / f"q_{kind}.wav", x.astype(np.float32), rate, subtype="FLOAT")
    for name, make in tools.items():
        got = {}
        for kind in signals:
            out = tmp / f"q_{kind}_out.wav"
            run(make(tmp / f"q_{kind}.wav", out), tmp)
            got[kind] = soundfile.read(out, dtype="float64")[0]
        results[name] = (_ripple(got["pass"], passband), _attenuation(got["stop"], stopband),
                         _sweep_alias(got["sweep"], signals["sweep"]))
    print("\nresampling quality, 48 kHz -> 44.1 kHz, 32-bit float in and out")
    print(f"  {'tool':40s} {'ripple to 20k':>14s} {'at 20.95k':>10s} {'stopband':>10s} {'sweep alias':>12s}")
    for name, ((ripple, edge), attenuation, alias) in results.items():
        print(f"  {name:40s} {ripple:11.1e} dB {edge:7.2f} dB {attenuation:7.1f} dB {alias:9.1f} dB")
    print("  ripple: 40 tones from 100 Hz to 20.95 kHz (95 % of 22.05 kHz) fitted together, the largest level error up"
          "\n  to 20 kHz, and the level of the last; stopband: 10 tones at 22.1-23.9 kHz, the loudest alias they leave"
          "\n  below 22.05 kHz against the tone; sweep: 21-24 kHz, its energy left below 20 kHz against its own")


def _levels(y: np.ndarray, frequencies, rate: int = 44100) -> np.ndarray:
    """The amplitude of each sine in ``y``, fitted all together (least squares) away from the ends."""
    part = y[rate // 2:-rate // 2]
    t = (np.arange(len(part)) + rate // 2) / rate
    phases = 2 * np.pi * np.outer(t, frequencies)
    coef = np.linalg.lstsq(np.concatenate([np.sin(phases), np.cos(phases)], 1), part, rcond=None)[0]
    return np.hypot(coef[:len(frequencies)], coef[len(frequencies):])


def _fit(y: np.ndarray, frequency: float) -> float:
    return float(_levels(y, [frequency])[0])


def _ripple(y, tones) -> tuple[float, float]:
    """The largest level error of the tones up to 20 kHz, and the level of the last (95 % of Nyquist), in dB."""
    levels = 20 * np.log10(_levels(y, tones) / 0.01)
    return float(np.abs(levels[tones <= 20000]).max()), float(levels[-1])


def _attenuation(y, tones) -> float:
    loudest = max(_fit(y, 44100 - f) for f in tones)
    return float(20 * np.log10(0.05 / max(loudest, 1e-12)))


def _sweep_alias(y, x) -> float:
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y)))) ** 2
    freqs = np.fft.rfftfreq(len(y), 1 / 44100)
    reference = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
    return float(10 * np.log10(max(spectrum[freqs < 20000].sum(), 1e-300) / reference.sum()))


def long(hours: float, tmp: Path, budget: str) -> None:
    """Peak memory on hours of 96 kHz stereo audio, read, filtered and written in blocks, and on a tenth of it."""
    import soundfile

    rng = np.random.default_rng(7)
    response = tmp / "hall96.wav"
    soundfile.write(response, hall(3, 96000, 2, rng), 96000, subtype="FLOAT")
    for length in (hours / 10, hours):
        src = tmp / f"long_{length:g}h.wav"
        block = music(60, 96000, rng)
        with soundfile.SoundFile(src, "w", 96000, 2, "PCM_16", format="RF64") as out:
            for _ in range(int(round(length * 60))):
                out.write(block)
        cmd = CONVCLI + ["filter", str(src), "-k", f"ir:{response}", "--memory-budget", budget,
                         "-o", str(tmp / "long_out.wav")]
        wall, cpu, peak = run(cmd, tmp)
        size = src.stat().st_size / 1e9
        print(f"  {length:g} h of 96 kHz stereo 16-bit ({size:.1f} GB), 3 s stereo response: peak {peak:.0f} MiB, "
              f"wall {wall:.0f} s, CPU {cpu:.0f} s")
        src.unlink()
        (tmp / "long_out.wav").unlink()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--only", default="reverb,resample,quality")
    parser.add_argument("--hours", type=float, default=10)
    parser.add_argument("--tmp", default=None, help="where the long file goes (it needs twice its size free)")
    parser.add_argument("--memory-budget", default="1G")
    args = parser.parse_args(argv)
    only = set(args.only.split(","))
    print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; medians of {args.repeats} runs, "
          "contenders taking turns")
    with tempfile.TemporaryDirectory(prefix="convcli-reverb-", dir=args.tmp) as tmp:
        tmp = Path(tmp)
        if only & {"reverb", "resample"}:
            paths = write_inputs(tmp, args.minutes)
            if "reverb" in only:
                reverb(paths, args.repeats, tmp, args.minutes)
            if "resample" in only:
                resample(paths, args.repeats, tmp, args.minutes)
        if "quality" in only:
            quality(tmp)
        if "long" in only:
            print(f"\npeak memory, --memory-budget {args.memory_budget}")
            long(args.hours, tmp, args.memory_budget)
    return 0


if __name__ == "__main__":
    sys.exit(main())
