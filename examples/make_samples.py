"""Make the generated sample files of this folder: a short stereo WAV and a small volume.

Run from the repository root: ``python examples/make_samples.py``.  The files
are made from formulas with a fixed seed, so running it again gives the same
bytes (CC0, like the rest of the generated data).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def chirp_wav(path: Path, rate: int = 22050, seconds: float = 1.5) -> None:
    """Stereo 16-bit WAV: left a 100 Hz -> 4 kHz chirp, right a 440 Hz tone with a little noise."""
    import soundfile as sf

    t = np.arange(int(rate * seconds)) / rate
    f0, f1 = 100.0, 4000.0
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * seconds))  # linear chirp
    left = 0.5 * np.sin(phase)
    rng = np.random.default_rng(4)
    right = 0.4 * np.sin(2 * np.pi * 440.0 * t) + 0.05 * rng.standard_normal(t.size)
    fade = np.minimum(1.0, np.minimum(t, seconds - t) / 0.02)  # 20 ms fades: no clicks
    sf.write(path, np.stack([left, right], axis=1) * fade[:, None], rate, subtype="PCM_16")


def phantom_npy(path: Path, n: int = 40) -> None:
    """A 40^3 float32 volume: a bright sphere, a darker cube and a thin rod in mild noise."""
    z, y, x = np.mgrid[0:n, 0:n, 0:n].astype(np.float32)
    vol = np.zeros((n, n, n), np.float32)
    vol[(z - 14) ** 2 + (y - 20) ** 2 + (x - 14) ** 2 < 8**2] = 1.0
    vol[26:34, 22:32, 22:32] = 0.5
    vol[:, 8:10, 30:32] = 0.8
    rng = np.random.default_rng(5)
    vol += 0.05 * rng.standard_normal(vol.shape).astype(np.float32)
    np.save(path, vol)


if __name__ == "__main__":
    chirp_wav(HERE / "chirp.wav")
    phantom_npy(HERE / "phantom.npy")
    print("wrote", HERE / "chirp.wav", "and", HERE / "phantom.npy")
