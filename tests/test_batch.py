"""Batch mode of `convcli filter`: folders, parallel workers, failures, resume, interrupts."""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import convcli_on_terminal, convcli_process, leftovers
from convcli import correlate

KERNEL = "[[1,2,1],[2,4,2],[1,2,1]]"
K = np.array(json.loads(KERNEL), float)


def _finished(folder: Path) -> list[Path]:
    """Outputs written to the end: the atomic writer's hidden temporaries are not outputs yet."""
    return sorted(p for p in folder.glob("*.npy") if "convcli-tmp" not in p.name)


def run(*args, **kwargs):
    """convcli as a real process, output as text: batches start worker processes and take signals."""
    return convcli_process(*args, text=True, **kwargs)


@pytest.fixture
def tree(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "in"
    (root / "sub" / "deeper").mkdir(parents=True)
    arrays = {}
    for rel in ("a.npy", "sub/b.npy", "sub/deeper/c.npy", "sub/deeper/d.npy"):
        arrays[rel] = rng.normal(size=(24, 20)).astype(np.float32)
        np.save(root / rel, arrays[rel])
    (root / "notes.txt").write_text("not an image\n")
    (root / "sub" / "corrupt.npy").write_bytes(b"\x93NUMPY\x01\x00" + b"\xff" * 40)
    return root, arrays


def test_a_nested_tree_with_a_corrupt_and_a_non_media_file(tmp_path, tree):
    root, arrays = tree
    out = tmp_path / "out"
    proc = run("filter", root, "-o", out, "-k", KERNEL, "-j", 2)
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("convcli: error:")]
    assert len(errors) == 1 and "corrupt.npy" in errors[0]
    assert "4 done, 1 failed" in proc.stderr and "Traceback" not in proc.stderr
    for rel, x in arrays.items():
        np.testing.assert_allclose(np.load(out / rel), correlate(x, K), rtol=1e-6)
    assert not (out / "sub" / "corrupt.npy").exists() and not (out / "notes.txt").exists()
    assert leftovers(tmp_path) == []


def test_json_lines_one_per_file(tmp_path, tree):
    root, arrays = tree
    proc = run("filter", root, "-o", tmp_path / "out", "-k", KERNEL, "-j", 2, "--json", "-q")
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert sorted(r["status"] for r in records) == ["failed"] + ["ok"] * 4
    assert {Path(r["input"]).name for r in records} == {"a.npy", "b.npy", "c.npy", "d.npy", "corrupt.npy"}
    assert all(isinstance(r["seconds"], float) for r in records)
    assert [r["error"] for r in records if r["status"] == "failed"][0].count("corrupt.npy") == 1


def test_skip_existing_resumes_an_interrupted_run(tmp_path, tree):
    root, _ = tree
    out = tmp_path / "out"
    run("filter", root, "-o", out, "-k", KERNEL, "-j", 1)
    (out / "sub" / "b.npy").unlink()
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.npy")}
    proc = run("filter", root, "-o", out, "-k", KERNEL, "--skip-existing", "--json", "-q")
    statuses = {Path(r["input"]).name: r["status"] for r in map(json.loads, proc.stdout.splitlines())}
    assert statuses["b.npy"] == "ok" and statuses["a.npy"] == statuses["c.npy"] == "skipped"
    assert (out / "sub" / "b.npy").exists()
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())


def test_batch_without_output_is_refused_and_suffix_writes_beside(tmp_path, tree):
    root, arrays = tree
    proc = run("filter", root, "-k", KERNEL)
    assert proc.returncode == 2 and "--suffix" in proc.stderr
    proc = run("filter", root, "-k", KERNEL, "--suffix", "_blur", "-q")
    assert proc.returncode == 1  # the corrupt file
    np.testing.assert_allclose(np.load(root / "sub" / "b_blur.npy"), correlate(arrays["sub/b.npy"], K), rtol=1e-6)
    np.testing.assert_array_equal(np.load(root / "sub" / "b.npy"), arrays["sub/b.npy"])  # input untouched


def test_output_folder_inside_the_input_is_never_read_back(tmp_path, tree):
    root, _ = tree
    (root / "sub" / "corrupt.npy").unlink()
    out = root / "out"
    assert run("filter", root, "-o", out, "-k", KERNEL, "-q").returncode == 0
    proc = run("filter", root, "-o", out, "-k", KERNEL, "--json", "-q")
    assert proc.returncode == 0
    assert not any("/out/" in json.loads(line)["input"] for line in proc.stdout.splitlines())
    assert not (out / "out").exists()


def test_two_inputs_with_the_same_output_name(tmp_path):
    for folder in ("x", "y"):
        (tmp_path / folder).mkdir()
        np.save(tmp_path / folder / "same.npy", np.ones((5, 5), np.float32))
    proc = run("filter", tmp_path / "x" / "same.npy", tmp_path / "y" / "same.npy", "-o", tmp_path / "out", "-k", KERNEL)
    assert proc.returncode == 1 and "same output name" in proc.stderr
    assert (tmp_path / "out" / "same.npy").exists()


def test_symlinks_leaving_the_tree_are_not_followed(tmp_path, tree):
    root, _ = tree
    outside = tmp_path / "secret.npy"
    np.save(outside, np.ones((4, 4), np.float32))
    os.symlink(outside, root / "link.npy")
    proc = run("filter", root, "-o", tmp_path / "out", "-k", KERNEL, "--verbose")
    assert not (tmp_path / "out" / "link.npy").exists()
    assert "link.npy" in proc.stderr and "leaving" in proc.stderr


def test_sigint_mid_batch_stops_cleanly(tmp_path):
    root = tmp_path / "many"
    root.mkdir()
    rng = np.random.default_rng(1)
    for i in range(80):
        np.save(root / f"f{i:03d}.npy", rng.normal(size=(160, 160)).astype(np.float32))
    kernel = tmp_path / "k.npy"
    np.save(kernel, rng.normal(size=(21, 21)))
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "convcli", "filter", str(root), "-o", str(out), "-k", str(kernel),
                             "--method", "direct", "-j", "2"], stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(_finished(out)) < 2:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole process group
    sent = time.monotonic()
    _, stderr = proc.communicate(timeout=30)
    assert time.monotonic() - sent < 5
    assert proc.returncode in (-signal.SIGINT, 130), stderr
    assert "interrupted" in stderr and "done" in stderr and "Traceback" not in stderr
    finished = _finished(out)
    assert 0 < len(finished) < 80
    for path in finished:  # every output present is complete
        assert np.load(path).shape == (160, 160)
    assert leftovers(tmp_path) == []


# --------------------------------------------------------------------------- progress on a terminal
class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_tells_the_bar_a_few_times_a_second_not_per_file(monkeypatch):
    """Telling rich of every file cost 130 us each: 100,000 small files took 254 s instead of 75."""
    from rich.progress import Progress

    from convcli.cli.batch_report import _Progress

    updates = []
    update = Progress.update
    monkeypatch.setattr(Progress, "update", lambda self, *args, **kw: updates.append(1) or update(self, *args, **kw))
    monkeypatch.setattr(sys, "stderr", _Terminal())
    start = time.monotonic()
    progress = _Progress(50_000, enabled=True)
    for _ in range(50_000):
        progress.advance()
    progress.close()
    elapsed = time.monotonic() - start
    assert progress.done == 50_000
    assert len(updates) <= _Progress.REDRAWS_PER_SECOND * elapsed + 2


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_a_batch_on_a_terminal_shows_its_progress(tmp_path):
    root = tmp_path / "many"
    root.mkdir()
    for i in range(300):
        np.save(root / f"f{i:03d}.npy", np.full((8, 8), i, np.float32))
    code, text = convcli_on_terminal("filter", root, "-o", tmp_path / "out", "-k", KERNEL, "-j", "2", timeout=60)
    assert code == 0
    assert "300/300" in text and "files/s" in text  # the last count is shown before the bar goes
    assert "convcli: 300 done, 0 failed in" in text
    assert len(_finished(tmp_path / "out")) == 300
