"""The command line keeps its word: exit codes, JSON, output paths, reruns, ordering, names (issue 14).

Each test runs convcli as a user does and checks what the user sees: the exit
code, stdout parsed as JSON, one line on stderr, the files left behind.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, convcli, convcli_on_terminal, convcli_process

PHOTO = str(ROOT / "examples" / "photo.jpg")


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "xdg-cache"))
    monkeypatch.delenv("CONVCLI_WEIGHTS", raising=False)


def _image(path: Path, size=(24, 16), seed=0) -> str:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return str(path)


def _one_error_line(run) -> str:
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("convcli: error: "), run.stderr
    assert "Traceback" not in run.stderr
    return lines[0]


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# --------------------------------------------------------------------------- the README's table, row by row
def _readme_exit_codes() -> dict[str, str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Errors and exit codes", 1)[1].split("\n## ", 1)[0]
    return {m.group(1).strip(): m.group(2) for m in re.finditer(r"^\| ([0-9 /]+) \| (.+) \|$", section, re.M)}


def _interrupted(tmp_path) -> tuple[int, int]:
    """A run waiting on stdin, stopped by SIGINT and by SIGTERM: the codes a shell sees (128 + signal)."""
    codes = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        proc = subprocess.Popen([sys.executable, "-m", "convcli", "filter", "-", "-k", "box:3", "-o",
                                 str(tmp_path / "x.npy")], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "pipe" not in Path(f"/proc/{proc.pid}/wchan").read_text():
            time.sleep(0.02)  # until it waits on stdin
        proc.send_signal(signum)
        proc.wait(timeout=60)
        proc.stdin.close()
        assert proc.returncode == -signum, proc.stderr.read()
        proc.stderr.close()
        codes.append(128 - proc.returncode)
    return tuple(codes)


def test_every_row_of_the_readme_exit_code_table_is_what_convcli_does(tmp_path, monkeypatch):
    table = _readme_exit_codes()
    assert set(table) == {"0", "1", "2", "70", "130 / 143"}, table
    photo = _image(tmp_path / "p.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (tmp_path / "k.txt").write_text("1 2\n3\n")  # ragged rows: a broken kernel file
    np.save(tmp_path / "k3.npy", np.ones((3, 3, 3)))
    out = str(tmp_path / "o.png")
    commands = {
        "0": [("filter", photo, "-k", "sobel", "-o", out), ("kernels", "list")],
        "1": [("filter", str(tmp_path / "bad.png"), "-k", "sobel", "-o", out),
              ("filter", photo, "-k", str(tmp_path / "k.txt"), "-o", out),
              ("filter", str(tmp_path / "missing.png"), "-k", "sobel", "-o", out)],
        "2": [("filter", photo, "-k", "sobel", "--stride", "0", "-o", out),
              ("filter", photo, "-k", "sobel", "--stride", "2,x", "-o", out),
              ("filter", photo, "-k", "[[1,NaN],[1,1]]", "-o", out),
              ("filter", photo, "-k", "[[[1,1],[1,1]],[[1,1],[1,1]]]", "-o", out),
              ("filter", photo, "-k", str(tmp_path / "k3.npy"), "-o", out),
              ("filter", photo, "-k", "box:5", "--padding", "valid", "--stride", "1", "--dilation", "9", "-o", out),
              ("filter", photo, "-k", "sobel", "-o", str(tmp_path / "e.wav")),
              ("filter", photo, "-k", "sobel", "-o", str(tmp_path / "e.xyz")),
              ("filter", photo, "--bogus-flag")],
    }
    for code, runs in commands.items():
        for args in runs:
            run = convcli(*args)
            assert run.exit_code == int(code), (code, args, run.output)
            if code != "0":
                _one_error_line(run)
    assert not (tmp_path / "e.wav").exists() and not (tmp_path / "e.xyz").exists()

    from convcli.pipeline import filter as pipeline_filter

    def bug(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(pipeline_filter, "filter_file", bug)
    for extra in ((), ("--debug",)):
        run = convcli("filter", photo, "-k", "sobel", "-o", out, *extra)
        assert run.exit_code == 70, run.output
        assert ("Traceback" in run.stderr) == bool(extra) and "ZeroDivisionError" in run.stderr
    assert _interrupted(tmp_path) == (130, 143)


def test_a_kernel_that_does_not_fit_is_the_same_mistake_inline_or_from_a_file(tmp_path):
    photo = _image(tmp_path / "p.png")
    np.save(tmp_path / "k3.npy", np.ones((2, 2, 2)))
    inline = convcli("filter", photo, "-k", "[[[1,1],[1,1]],[[1,1],[1,1]]]", "-o", tmp_path / "a.png")
    from_file = convcli("filter", photo, "-k", tmp_path / "k3.npy", "-o", tmp_path / "b.png")
    assert inline.exit_code == from_file.exit_code == 2
    assert "(3D) but the input is an image" in _one_error_line(from_file)
    assert _files(tmp_path) == ["k3.npy", "p.png"]
    np.save(tmp_path / "k4.npy", np.ones((2, 2, 2, 2)))  # fits no input at all: a broken file, failed work
    assert convcli("filter", photo, "-k", tmp_path / "k4.npy", "-o", tmp_path / "c.png").exit_code == 1


@pytest.mark.parametrize("args", [("kernels", "list"), ("kernels", "show", "gaussian:sigma=9"),
                                  ("filter", PHOTO, "-k", "sobel", "-o", "-")])
def test_a_reader_that_goes_away_ends_every_command_quietly_with_0(args):
    command = " ".join([sys.executable, "-m", "convcli", *map(str, args)])
    for _ in range(3):
        shell = subprocess.run(["bash", "-c", f"{command} | head -c 1 >/dev/null; echo ${{PIPESTATUS[0]}}"],
                               capture_output=True, text=True, timeout=120)
        assert shell.stdout.strip() == "0" and shell.stderr == "", shell


def test_debug_works_anywhere_on_the_line(tmp_path):
    photo = _image(tmp_path / "p.png")
    for args in (("--debug", "filter", photo), ("filter", photo, "--debug"), ("filter", "--debug", photo)):
        run = convcli(*args, "-k", "sobel", "--stride", "0", "-o", tmp_path / "x.png")
        assert run.exit_code == 2 and "Traceback" in run.stderr, (args, run.output)
    # After "--" it is a file name, not the option.
    run = convcli("filter", "-k", "sobel", "-o", tmp_path / "x.png", "--", "--debug")
    assert run.exit_code == 1 and "Traceback" not in run.stderr and "--debug" in _one_error_line(run)


# --------------------------------------------------------------------------- one JSON contract
def test_a_single_file_that_fails_still_prints_its_json_object(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    run = convcli("filter", tmp_path / "bad.png", "-k", "sobel", "-o", tmp_path / "o.png", "--json")
    assert run.exit_code == 1
    (record,) = [json.loads(line) for line in run.stdout.splitlines()]
    assert record["input"] == str(tmp_path / "bad.png") and record["status"] == "failed"
    assert record["error"] == _one_error_line(run).removeprefix("convcli: error: ")
    ok = convcli("filter", _image(tmp_path / "p.png"), "-k", "sobel", "-o", tmp_path / "o.png", "--json")
    (record,) = [json.loads(line) for line in ok.stdout.splitlines()]
    assert record["status"] == "ok" and record["error"] is None and record["output"] == str(tmp_path / "o.png")


def test_every_input_of_a_batch_has_one_json_object_in_argument_order(tmp_path):
    good = [_image(tmp_path / f"{name}.png", seed=i) for i, name in enumerate(("c", "a", "b"))]
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    inputs = [good[0], str(tmp_path / "bad.png"), good[1], str(tmp_path / "none.png"), good[2]]
    run = convcli_process("filter", *inputs, "-k", "box:3", "-o", tmp_path / "out", "--json", "-j", "2")
    assert run.returncode == 1
    records = [json.loads(line) for line in run.stdout.decode().splitlines()]
    assert [r["input"] for r in records] == inputs
    assert [r["status"] for r in records] == ["ok", "failed", "ok", "failed", "ok"]
    assert all((r["error"] is None) == (r["status"] == "ok") for r in records)


def test_classify_reports_in_argument_order_and_json_keeps_failures(tmp_path):
    # A large photo first: a worker finishes the small ones before it.
    big = _image(tmp_path / "big.png", size=(3000, 2400), seed=1)
    small = [_image(tmp_path / f"s{i}.png", size=(40, 30), seed=i + 2) for i in range(3)]
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    inputs = [big, *small[:2], str(tmp_path / "bad.jpg"), small[2]]
    run = convcli_process("classify", *inputs, "--json", "-j", "2", "--top", "1")
    assert run.returncode == 1
    records = [json.loads(line) for line in run.stdout.decode().splitlines()]
    assert [r["input"] for r in records] == inputs
    assert [r["status"] for r in records] == ["ok", "ok", "ok", "failed", "ok"]
    failed = records[3]
    assert failed["predictions"] is None and "bad.jpg" in failed["error"]
    tsv = convcli_process("classify", *inputs, "-j", "2", "--top", "1")
    assert [line.split("\t")[0] for line in tsv.stdout.decode().splitlines()] == [big, *small]


def test_classify_of_one_failing_photo_prints_its_json_object(tmp_path):
    run = convcli("classify", tmp_path / "missing.jpg", "--json")
    assert run.exit_code == 1
    (record,) = [json.loads(line) for line in run.stdout.splitlines()]
    assert record["status"] == "failed" and record["predictions"] is None and record["error"]


def test_classify_has_verbose():
    run = convcli("classify", PHOTO, "-v", "--top", "1")
    assert run.exit_code == 0 and re.search(r"classified in [0-9.]+ s", run.stderr), run.output


# --------------------------------------------------------------------------- output paths
def test_several_outputs_never_go_to_a_name_that_reads_as_one_file(tmp_path):
    folder = tmp_path / "set1"
    folder.mkdir()
    for i in range(2):
        _image(folder / f"{i}.png", seed=i)
    before = _files(tmp_path)
    run = convcli("filter", folder, "-k", "sobel", "-o", tmp_path / "single.png")
    assert run.exit_code == 2 and "name a folder" in _one_error_line(run)
    run = convcli("classify", folder / "0.png", folder / "1.png", "--cam", tmp_path / "one.png")
    assert run.exit_code == 2 and "name a folder" in _one_error_line(run)
    (tmp_path / "existing.txt").write_text("mine")
    run = convcli("filter", folder, "-k", "sobel", "-o", tmp_path / "existing.txt")
    assert run.exit_code == 2 and "is a file" in _one_error_line(run)
    assert _files(tmp_path) == sorted(before + ["existing.txt"])
    run = convcli("filter", folder, "-k", "sobel", "-o", tmp_path / "made")
    assert run.exit_code == 0 and sorted(os.listdir(tmp_path / "made")) == ["0.png", "1.png"]


def test_one_input_to_a_missing_folder_names_the_folder_as_missing(tmp_path):
    run = convcli("filter", _image(tmp_path / "p.png"), "-k", "sobel", "-o", tmp_path / "nowhere" / "x.png")
    assert run.exit_code == 1 and "folder does not exist" in _one_error_line(run)


# --------------------------------------------------------------------------- reruns
def test_a_suffix_batch_run_twice_never_filters_its_own_outputs(tmp_path):
    for i in range(3):
        _image(tmp_path / f"{i}.png", seed=i)
    first = convcli("filter", tmp_path, "-k", "box:3", "--suffix", "_soft")
    assert first.exit_code == 0, first.output
    made = _files(tmp_path)
    stamps = {name: os.stat(tmp_path / name).st_mtime_ns for name in made}
    again = convcli("filter", tmp_path, "-k", "box:3", "--suffix", "_soft", "--skip-existing", "--json")
    assert again.exit_code == 0, again.output
    assert [json.loads(line)["status"] for line in again.stdout.splitlines()] == ["skipped"] * 3
    assert _files(tmp_path) == made and all(os.stat(tmp_path / n).st_mtime_ns == t for n, t in stamps.items())
    replaced = convcli("filter", tmp_path, "-k", "box:3", "--suffix", "_soft")
    assert replaced.exit_code == 0 and _files(tmp_path) == made == sorted(
        [f"{i}.png" for i in range(3)] + [f"{i}_soft.png" for i in range(3)])


# --------------------------------------------------------------------------- what -v, --explain and --json say
def test_verbose_explain_and_json_name_the_method_that_runs_in_the_same_words(tmp_path):
    photo = _image(tmp_path / "p.png", size=(64, 48))
    for kernel, method in (("gaussian:sigma=2", "lowrank"), ("box:5", "separable"), ("box:5", "direct")):
        ran = convcli("filter", photo, "-k", kernel, "--method", method, "-o", tmp_path / "o.png", "--json", "-v")
        assert ran.exit_code == 0, ran.output
        step = json.loads(ran.stdout)["kernels"][0]
        assert step["method"] == method and f"method: {method} (" in ran.stderr
        explained = convcli("filter", photo, "-k", kernel, "--method", method, "--explain")
        assert f"  method: {method} (" in explained.stdout
        assert json.loads(convcli("filter", photo, "-k", kernel, "--method", method, "--explain",
                                  "--json").stdout)[0]["method"] == method


def test_explain_shows_the_border_and_range_modes_that_will_be_used(tmp_path):
    photo = _image(tmp_path / "p.png")
    text = convcli("filter", photo, "-k", "sobel", "--pad-mode", "replicate", "--range", "abs", "--explain").stdout
    assert "border mode: replicate" in text and "range (integer outputs): abs" in text
    text = convcli("filter", photo, "-k", "gaussian:sigma=1", "--explain").stdout
    assert "border mode: reflect" in text and "range (integer outputs): clip" in text
    assert "operation: cross-correlation" in text
    assert "operation: convolution" in convcli("filter", photo, "-k", "sobel", "--convolve", "--explain").stdout


# --------------------------------------------------------------------------- forgiving names, plain messages
def test_kernel_names_in_another_case_mean_the_same_kernel(tmp_path):
    photo = _image(tmp_path / "p.png")
    for name in ("sobel", "Sobel", "SOBEL"):
        assert convcli("filter", photo, "-k", name, "-o", tmp_path / f"{name}.npy", "--format", "npy").exit_code == 0
    assert np.array_equal(np.load(tmp_path / "Sobel.npy"), np.load(tmp_path / "sobel.npy"))
    assert convcli("filter", photo, "-k", "Gaussian:sigma=1", "-o", tmp_path / "g.png").exit_code == 0


@pytest.mark.parametrize("flag, typo, hint", [
    ("--pad-mode", "mirorr", "mirror"), ("--method", "seperable", "separable"), ("--alpha", "keepp", "keep"),
    ("--range", "clipp", "clip"), ("--colorspace", "lineer", "linear"), ("--format", "pgn", "png"),
    ("--precision", "float23", "float32"),
])
def test_every_option_with_a_fixed_set_of_values_says_did_you_mean(tmp_path, flag, typo, hint):
    run = convcli("filter", _image(tmp_path / "p.png"), "-k", "sobel", flag, typo, "-o", tmp_path / "o.png")
    assert run.exit_code == 2
    assert re.search(rf"did you mean [^;]*\b{hint}\b", _one_error_line(run)) and flag in run.stderr


def test_a_variant_kernel_with_a_wrong_variant_names_the_right_ones(tmp_path):
    run = convcli("filter", _image(tmp_path / "p.png"), "-k", "laplacian:4", "-o", tmp_path / "o.png")
    assert run.exit_code == 2 and "laplacian:8" in _one_error_line(run) and "no parameters" not in run.stderr


def test_messages_show_numbers_not_python_reprs(tmp_path):
    np.save(tmp_path / "k.npy", np.array([[1, np.nan], [1, 1]]))
    run = convcli("filter", _image(tmp_path / "p.png"), "-k", tmp_path / "k.npy", "-o", tmp_path / "o.png")
    line = _one_error_line(run)
    assert run.exit_code == 1 and "holds nan at index [0, 1]" in line and "np." not in line


def test_kernels_list_in_a_pipe_is_one_tab_separated_line_per_kernel():
    run = convcli_process("kernels", "list", text=True)
    assert run.returncode == 0
    rows = [line.split("\t") for line in run.stdout.splitlines()]
    assert all(len(row) == 4 for row in rows), run.stdout
    names = [row[0].split(" ")[0] for row in rows]
    assert {"sobel", "gaussian", "laplacian-8", "ir"} <= set(names) and len(names) == len(set(names))
    ir = rows[names.index("ir")]
    assert ir[1] == "1D" and "impulse response" in ir[3].lower()


@pytest.mark.parametrize("args, marker", [(("--show-completion", "zsh"), "#compdef convcli"),
                                          (("--show-completion=fish",), "complete --command convcli"),
                                          (("--show-completion", "bash"), "complete -o default -F")])
def test_show_completion_honours_its_shell(args, marker):
    run = convcli(*args)
    assert run.exit_code == 0 and marker in run.stdout, run.output


@pytest.mark.parametrize("flag, typed, expected", [
    ("--method", "se", ["separable"]), ("--range", "", ["clip", "abs", "offset", "rescale"]),
    ("--alpha", "p", ["premultiply"]), ("--pad-mode", "re", ["reflect", "replicate"]), ("--format", "ti", ["tif", "tiff"]),
])
def test_completion_offers_the_values_of_options_with_a_fixed_set(flag, typed, expected):
    env = dict(os.environ, _CONVCLI_COMPLETE="complete_bash", COMP_WORDS=f"convcli filter x.png {flag} {typed}",
               COMP_CWORD="4")
    run = convcli_process(env=env, text=True)
    assert run.returncode == 0 and run.stdout.split() == expected, run


# --------------------------------------------------------------------------- progress on a terminal
@pytest.fixture(scope="module")
def long_file(tmp_path_factory):
    """A file that takes seconds: 2000x2000 samples through a 31x31 kernel, forced to the direct method."""
    path = tmp_path_factory.mktemp("long") / "big.npy"
    np.save(path, np.random.default_rng(7).random((2000, 2000), dtype=np.float32))
    return path


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_one_long_file_shows_its_progress_on_a_terminal_and_not_with_q(long_file, tmp_path):
    args = ["filter", long_file, "-k", "box:31", "--method", "direct", "-o", tmp_path / "out.npy"]
    code, text = convcli_on_terminal(*args)
    assert code == 0
    plain = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", text)
    assert "blocks ETA" in plain and re.search(r"(\d+)/\1 blocks", plain), plain[-500:]  # the last count shown
    code, text = convcli_on_terminal(*args, "-q")
    assert code == 0 and text == ""
    piped = convcli_process(*args)
    assert piped.returncode == 0 and piped.stderr == b""


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_classify_tables_are_never_glued_to_a_stale_progress_line(tmp_path):
    for i in range(3):
        _image(tmp_path / f"photo{i}.png", size=(64, 48), seed=i)
    names = [f"photo{i}.png" for i in range(3)]
    code, text = convcli_on_terminal("classify", *names, "-j", "1", "--top", "1", stdout_too=True, cwd=tmp_path)
    assert code == 0
    plain = re.sub(r"\x1b\[[0-9;?]*[mlh]", "", text)  # colours and cursor visibility; erasures stay
    for i in range(3):
        before = plain[:plain.index(f"photo{i}.png")]
        # The bar's line was erased (ESC[2K) or ended before the table's title: nothing of it on the title's line.
        assert before.endswith("\x1b[2K") or before.endswith("\n"), repr(before[-200:])


def test_a_custom_kernel_files_comment_is_its_description_in_kernels_list(tmp_path):
    (tmp_path / "diag.txt").write_text("# Diagonal edges, my own\n1 0\n0 -1\n")
    run = convcli_process("kernels", "list", env=dict(os.environ, CONVCLI_KERNEL_PATH=str(tmp_path)), text=True)
    rows = {line.split("\t")[0]: line.split("\t") for line in run.stdout.splitlines()}
    assert run.returncode == 0 and rows["diag"][1:] == ["2D", "", "Diagonal edges, my own"]


def test_minus_q_silences_the_exif_orientation_note_and_j0_is_refused_for_one_file_too(tmp_path):
    image = Image.fromarray(np.random.default_rng(3).integers(0, 256, (12, 20, 3), dtype=np.uint8))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees to be upright
    image.save(tmp_path / "turned.jpg", exif=exif)
    args = ["filter", tmp_path / "turned.jpg", "-k", "box:3", "-o", tmp_path / "o.png"]
    assert "EXIF orientation 6 applied" in convcli(*args).stderr
    quiet = convcli(*args, "-q")
    assert quiet.exit_code == 0 and quiet.stderr == ""
    refused = convcli(*args, "-j", "0")
    assert refused.exit_code == 2 and "-j/--jobs" in _one_error_line(refused)


def test_api_messages_show_numpy_numbers_plainly():
    from convcli.engine import rank_filter
    from convcli.errors import ParameterError
    from convcli.pipeline.options import BatchOptions

    with pytest.raises(ParameterError) as rank:
        rank_filter(np.zeros((5, 5)), np.ones((3, 3)), np.float64(1.5))
    with pytest.raises(ParameterError) as jobs:
        BatchOptions(workers=np.int64(0))
    assert str(rank.value) == "must be a whole number, got 1.5" and str(jobs.value) == "must be at least 1, got 0"


@pytest.mark.parametrize("command, usage", [(("filter",), "Usage: convcli filter [OPTIONS] INPUT..."),
                                            (("classify",), "Usage: convcli classify [OPTIONS] FILE_OR_FOLDER..."),
                                            (("kernels", "show"), "Usage: convcli kernels show [OPTIONS] SPEC")])
def test_usage_lines_read_as_users_type_them(command, usage):
    run = convcli(*command, "--help")
    assert run.exit_code == 0 and run.stdout.splitlines()[0] == usage and "{" not in run.stdout.splitlines()[0]
