"""Notes: what a reader, the filter or a writer changed is one warning line per note; ``-q`` silences them."""
from __future__ import annotations

import numpy as np
import soundfile as sf
from PIL import Image

from conftest import convcli


def rotated_jpeg(path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees to show upright
    Image.fromarray(np.full((6, 10, 3), 90, np.uint8)).save(path, exif=exif)
    return path


def test_a_note_is_one_warning_line_naming_the_file(tmp_path):
    path = rotated_jpeg(tmp_path / "turned.jpg")
    result = convcli("filter", path, "-k", "box:3", "-o", tmp_path / "o.png")
    assert result.exit_code == 0
    assert result.stderr == f"convcli: warning: {path}: EXIF orientation 6 applied (the output is upright)\n"


def test_q_silences_notes_of_a_single_file(tmp_path):
    path = rotated_jpeg(tmp_path / "turned.jpg")
    result = convcli("filter", path, "-k", "box:3", "-q", "-o", tmp_path / "o.png")
    assert result.exit_code == 0 and result.stderr == ""
    assert Image.open(tmp_path / "o.png").size == (6, 10)  # the note was silenced, not the work


def test_q_silences_clipped_audio_too(tmp_path):
    sf.write(tmp_path / "loud.wav", np.full(100, 0.9), 8000, subtype="PCM_16")
    loud = convcli("filter", tmp_path / "loud.wav", "-k", "[2]", "-o", tmp_path / "o.wav")
    assert loud.exit_code == 0 and "samples clipped" in loud.stderr
    quiet = convcli("filter", tmp_path / "loud.wav", "-k", "[2]", "-q", "-o", tmp_path / "q.wav")
    assert quiet.exit_code == 0 and quiet.stderr == ""


def test_a_batch_warns_for_each_file_with_notes(tmp_path):
    (tmp_path / "in").mkdir()
    turned = rotated_jpeg(tmp_path / "in" / "turned.jpg")
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(tmp_path / "in" / "plain.png")
    result = convcli("filter", tmp_path / "in", "-o", tmp_path / "out", "-k", "box:3", "-j", 1)
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("convcli: warning:")]
    assert warnings == [f"convcli: warning: {turned}: EXIF orientation 6 applied (the output is upright)"]
    quiet = convcli("filter", tmp_path / "in", "-o", tmp_path / "out2", "-k", "box:3", "-j", 1, "-q")
    assert quiet.exit_code == 0 and quiet.stderr == ""
