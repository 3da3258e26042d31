"""Issue 15, round two: what the file formats' own libraries and the operating system do to a run.

Temporaries of a run killed outright, signals while libsndfile writes, the
messages of damaged files, a TIFF of very many pages.  Each case runs convcli
as a user does and checks the failure contract: one line on stderr, the
documented exit code, nothing left behind.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import convcli, leftovers
from convcli.io.files import TEMP_MARKER, remove_stale, temp_prefix

CONVCLI = [sys.executable, "-m", "convcli"]


# --------------------------------------------------------------------------- temporaries of killed runs
def _dead_pid() -> int:
    """The pid of a process that has exited and been reaped (no process has it now, barring reuse)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _temporary(folder: Path, dest: str, pid: int, tail: str = "abcd1234") -> Path:
    path = folder / f"{temp_prefix(dest)}{pid}-{tail}{TEMP_MARKER}.npy"
    path.write_bytes(b"\0" * 1000)
    return path


def test_the_temporary_of_a_sigkilled_run_is_removed_by_the_next_run(tmp_path):
    """SIGKILL leaves the temporary (nothing can remove it then); the next run to that output does."""
    np.save(tmp_path / "big.npy", np.random.default_rng(0).standard_normal((160, 160, 160)).astype(np.float32))
    dest = tmp_path / "result.npy"
    run = [*CONVCLI, "filter", str(tmp_path / "big.npy"), "-k", "box:3", "--method", "direct",
           "--memory-budget", "40M", "-o", str(dest)]
    proc = subprocess.Popen(run, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not leftovers(tmp_path) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        proc.kill()
    finally:
        proc.wait()
    left = leftovers(tmp_path)
    assert proc.returncode == -signal.SIGKILL and len(left) == 1, (proc.returncode, left)
    assert left[0].startswith(f".result.npy.{proc.pid}-")

    r = convcli("filter", str(tmp_path / "big.npy"), "-k", "box:3", "--memory-budget", "40M", "-o", str(dest))
    assert r.exit_code == 0, r.output
    assert leftovers(tmp_path) == []
    assert np.load(dest).shape == (160, 160, 160)


def test_only_stale_temporaries_of_that_destination_are_removed(tmp_path):
    dead, alive = _dead_pid(), subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.05)
        stale = _temporary(tmp_path, "out.npy", dead)
        live = _temporary(tmp_path, "out.npy", alive.pid)  # written after its process started: still in use
        recycled = _temporary(tmp_path, "out.npy", alive.pid, "efgh5678")
        os.utime(recycled, (time.time() - 3600, time.time() - 3600))  # older than the process with its pid
        other = _temporary(tmp_path, "other.npy", dead)  # another destination's: not this run's business
        longer = _temporary(tmp_path, f"out.npy.{dead}-x", dead)  # so is that of an output named out.npy.<n>-x
        unmarked = tmp_path / f"{temp_prefix('out.npy')}{dead}-notes.txt"  # not a convcli temporary
        unmarked.write_text("mine")
        legacy = tmp_path / f"{temp_prefix('out.npy')}k3j_x9{TEMP_MARKER}.npy"  # no pid: never guessed at
        legacy.write_bytes(b"")
        removed = remove_stale(str(tmp_path), temp_prefix("out.npy"))
    finally:
        alive.kill()
        alive.wait()
    assert sorted(removed) == sorted([stale.name, recycled.name])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name, longer.name, unmarked.name,
                                                                 legacy.name])


def test_a_stale_copy_of_stdin_is_removed_by_the_next_run_that_copies_stdin(tmp_path):
    """A NIfTI read from stdin goes through a temporary copy (nibabel reads paths): a killed run's is removed."""
    nib = pytest.importorskip("nibabel")
    from conftest import convcli_process

    temporary = tmp_path / "tmp"
    temporary.mkdir()
    stale = temporary / f"convcli-stdin-{_dead_pid()}-x1y2z3_4{TEMP_MARKER}.nii"
    stale.write_bytes(b"\0" * 348)
    volume = np.random.default_rng(2).standard_normal((8, 9, 10)).astype(np.float32)
    nib.save(nib.Nifti1Image(volume, np.eye(4)), str(tmp_path / "v.nii"))
    proc = convcli_process("filter", "-", "-k", "box:3", "-o", tmp_path / "out.nii",
                           input=(tmp_path / "v.nii").read_bytes(), env=dict(os.environ, TMPDIR=str(temporary)))
    assert proc.returncode == 0, proc.stderr
    assert list(temporary.iterdir()) == []
    assert nib.load(str(tmp_path / "out.nii")).shape == (8, 9, 10)


def test_many_outputs_into_one_folder_list_it_once(tmp_path, monkeypatch):
    """Looking for stale temporaries costs a batch one listing of its output folder, not one an output."""
    from convcli.io.files import atomic_path

    listed = []
    real = os.listdir
    monkeypatch.setattr(os, "listdir", lambda folder=".": listed.append(str(folder)) or real(folder))
    for index in range(20):
        with atomic_path(tmp_path / f"out{index}.npy") as path:
            Path(path).write_bytes(b"x")
    assert listed.count(str(tmp_path)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"out{i}.npy" for i in sorted(range(20), key=str)]


def test_a_run_writing_the_same_output_keeps_its_own_temporary(tmp_path):
    mine = _temporary(tmp_path, "out.npy", os.getpid())
    assert remove_stale(str(tmp_path), temp_prefix("out.npy")) == []
    assert mine.exists()


# --------------------------------------------------------------------------- files cut short under the reader
_CUT_TIFF = """
import os, sys
from convcli.io import tiff
from convcli.cli import main

walk = tiff.page_offsets

def cut_then_walk(raw, subject):
    os.truncate(sys.argv[1], 1000)  # another program rewrites the file as its directories are walked
    return walk(raw, subject)

tiff.page_offsets = cut_then_walk
sys.exit(main(["filter", sys.argv[1], "-k", "box:3", "-o", sys.argv[2]]))
"""


def test_a_tiff_cut_short_while_its_pages_are_walked_is_one_error_line(tmp_path):
    """The directory walk reads the file (it used to map it: a SIGBUS, exit 135 and no word)."""
    import tifffile

    # Each page's directory, then its 9 KB of samples: the second directory lies pages of memory past the cut.
    with tifffile.TiffWriter(tmp_path / "pages.tif") as writer:
        for _ in range(3):
            writer.write(np.zeros((96, 96), np.uint8), metadata=None, contiguous=False)
    proc = subprocess.run([sys.executable, "-c", _CUT_TIFF, str(tmp_path / "pages.tif"), str(tmp_path / "out.tif")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"convcli: error: {tmp_path / 'pages.tif'}: the file shrank while it was read"), lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pages.tif"]


# --------------------------------------------------------------------------- signals inside libsndfile
# A slow disk: each of libsndfile's writes (a callback into Python from C) takes 0.2 s, so
# the run spends its time inside libsndfile, where a handler's exception used to be swallowed.
_SLOW_SINK = """
import sys, time
from convcli.io import audio
from convcli.cli import main

write = audio.Sink.write

def slow(self, data):
    time.sleep(0.2)
    return write(self, data)

audio.Sink.write = slow
sys.argv = ["convcli", *sys.argv[1:]]
main()
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_while_libsndfile_writes_stops_the_run_at_once_and_cleanly(tmp_path, signum):
    """No 'Exception ignored' traceback, no AssertionError (exit 70), no output written despite the signal."""
    sf = pytest.importorskip("soundfile")
    rng = np.random.default_rng(7)
    sf.write(tmp_path / "long.wav", (rng.standard_normal(40 * 48000) * 0.1).astype(np.float32), 48000,
             subtype="PCM_16")  # 30 blocks of 65536 frames: 6 s of slowed writes
    dest = tmp_path / "out.wav"
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_SINK, "filter", str(tmp_path / "long.wav"), "-k", "box:3",
                             "-o", str(dest)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not leftovers(tmp_path) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(0.3)  # inside the writes
        sent = time.monotonic()
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=30)
        latency = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signum, (proc.returncode, err)
    assert err == "" and out == ""
    assert latency < 4, latency  # the remaining writes alone would take over 5 s
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long.wav"]


def test_signals_held_hands_the_signal_to_its_handler_after_the_call():
    """Held during a libsndfile call, the signal's own handler runs after it and raises in Python."""
    from convcli.io.audio import Sink

    seen = []

    def handler(signum, frame):
        seen.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        sink = Sink(open(os.devnull, "w+b"))
        with pytest.raises(KeyboardInterrupt):
            with sink.signals_held():
                signal.raise_signal(signal.SIGTERM)
                assert seen == []  # not raised inside: recorded
                assert sink.write(b"abc") == 0  # every callback now reports nothing done
        assert seen == [signal.SIGTERM]
        assert signal.getsignal(signal.SIGTERM) is handler
    finally:
        signal.signal(signal.SIGTERM, previous)


# --------------------------------------------------------------------------- libraries' own messages
def _damaged_exif() -> bytes:
    """An EXIF block whose Make tag claims 100,000 bytes the block does not hold."""
    import struct

    tiff = b"MM\x00*" + struct.pack(">I", 8) + struct.pack(">H", 1) + struct.pack(">HHII", 0x010F, 2, 100_000, 26)
    return b"Exif\x00\x00" + tiff + b"\x00\x00\x00\x00" + b"Maker\x00"


@pytest.mark.parametrize("fmt, ext", [("JPEG", ".jpg"), ("WEBP", ".webp")])
def test_a_damaged_exif_block_is_a_note_of_ours_not_pillows_warning(tmp_path, fmt, ext):
    from PIL import Image

    from conftest import convcli_process

    pixels = (np.random.default_rng(3).random((24, 32, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / f"in{ext}", fmt, exif=_damaged_exif())
    proc = convcli_process("filter", tmp_path / f"in{ext}", "-k", "box:3", "-o", tmp_path / f"out{ext}", text=True)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines and all(line.startswith("convcli: warning: ") for line in lines), lines
    assert any("damaged metadata" in line and "left out" in line for line in lines), lines
    with Image.open(tmp_path / f"out{ext}") as im:
        assert im.size == (32, 24)


def test_classify_keeps_quiet_about_a_damaged_exif_block(tmp_path):
    from PIL import Image

    from conftest import convcli_process

    pixels = (np.random.default_rng(4).random((64, 64, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "in.jpg", "JPEG", exif=_damaged_exif())
    proc = convcli_process("classify", tmp_path / "in.jpg", text=True)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert len(proc.stdout.splitlines()) == 5


# Mutants decoded in one child process, its descriptor 2 captured around each run: what
# libtiff, imagecodecs, libjpeg or libwebp print from C reaches that descriptor, not sys.stderr.
_MUTANTS = """
import io, json, os, random, sys, tempfile
import numpy as np, tifffile
from PIL import Image
from convcli.cli import main

pixels = (np.random.default_rng(3).random((48, 64, 3)) * 255).astype(np.uint8)
exif = Image.Exif()
exif[0x0112], exif[0x010F], exif.get_ifd(0x8769)[0x9003] = 6, "Maker", "2020:01:01 00:00:00"
sources = []
for compression in ("zlib", "lzw", "jpeg", "packbits"):
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, pixels, compression=compression, rowsperstrip=8)
    sources.append((buffer.getvalue(), ".tif", 0))
buffer = io.BytesIO()
tifffile.imwrite(buffer, pixels, compression="zlib", tile=(16, 16))
sources.append((buffer.getvalue(), ".tif", 0))
for fmt, ext in (("PNG", ".png"), ("JPEG", ".jpg"), ("WEBP", ".webp"), ("GIF", ".gif")):
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt, **({"exif": exif} if fmt in ("JPEG", "WEBP") else {}))
    data = buffer.getvalue()
    sources.append((data, ext, max(data.find(b"MM\\x00*"), 0)))  # the EXIF block, where there is one
rng, folder = random.Random(int(sys.argv[1])), tempfile.mkdtemp()
saved, log, found = os.dup(2), os.path.join(folder, "stderr"), []
for data, ext, start in sources:
    for _ in range(int(sys.argv[2])):
        mutant = bytearray(data)
        for _ in range(rng.choice([1, 2, 4])):
            mutant[rng.randrange(start, min(len(mutant), start + 400))] = rng.randrange(256)
        path = os.path.join(folder, "in" + ext)
        with open(path, "wb") as fh:
            fh.write(mutant)
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(fd, 2)
        os.close(fd)
        sys.stderr = open(2, "w", closefd=False)
        code = main(["filter", path, "-k", "box:3", "-o", os.path.join(folder, "out" + ext)])
        sys.stderr.flush()
        os.dup2(saved, 2)
        sys.stderr = sys.__stderr__
        with open(log) as fh:
            lines = fh.read().splitlines()
        found.append([ext, code, lines])
print(json.dumps(found))
"""


def test_damaged_images_say_one_line_of_ours_and_nothing_else():
    """TIFF (deflate, LZW, JPEG, PackBits, tiled), PNG, JPEG, WebP, GIF mutants: only convcli's own lines."""
    import json

    proc = subprocess.run([sys.executable, "-c", _MUTANTS, "15", "12"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs = json.loads(proc.stdout)
    failed = [run for run in runs if run[1] == 1]
    assert len(runs) == 108 and len(failed) > 20  # the mutants do reach the decoders' errors
    for ext, code, lines in runs:
        assert code in (0, 1), (ext, code, lines)
        if code == 1:
            assert len(lines) == 1 and lines[0].startswith("convcli: error: "), (ext, lines)
        else:
            assert all(line.startswith("convcli: warning: ") for line in lines), (ext, lines)
