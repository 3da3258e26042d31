"""`convcli filter` on .npy arrays, run as users run it: in-process and as a real process."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from convcli import convolve, correlate
from conftest import convcli, convcli_process



def run(*args):
    return convcli("filter", *map(str, args))


def run_process(*args, **kwargs):
    return convcli_process("filter", *args, text=True, **kwargs)


@pytest.fixture
def signal_files(tmp_path):
    rng = np.random.default_rng(5)
    files = {}
    for nd, shape in ((1, (64,)), (2, (20, 24)), (3, (8, 9, 10))):
        x = rng.normal(size=shape).astype(np.float32)
        np.save(tmp_path / f"x{nd}.npy", x)
        files[nd] = (tmp_path / f"x{nd}.npy", x)
    return files


def test_the_issue_example_matches_the_engine(tmp_path, signal_files):
    path, x = signal_files[2]
    kernel = np.random.default_rng(1).normal(size=(3, 3))
    np.save(tmp_path / "k.npy", kernel)
    out = tmp_path / "out.npy"
    result = run(path, "-k", tmp_path / "k.npy", "--stride", 2, "--padding", "same", "--pad-mode", "reflect",
                 "--dilation", 2, "-o", out)
    assert result.exit_code == 0, result.output
    got = np.load(out)
    expected = correlate(x, kernel, stride=2, padding="same", pad_mode="reflect", dilation=2)
    assert got.dtype == np.float32 and got.shape == (10, 12)
    np.testing.assert_allclose(got, expected, rtol=1e-6)


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_text_kernel_files_in_every_dimension(tmp_path, signal_files, nd):
    path, x = signal_files[nd]
    kernel = np.arange(1.0, 1.0 + 3**nd).reshape((3,) * nd)
    if nd == 3:
        text = "\n\n".join("\n".join(" ".join(f"{v:g}" for v in row) for row in plane) for plane in kernel)
    else:
        text = "\n".join(", ".join(f"{v:g}" for v in row) for row in np.atleast_2d(kernel))
    (tmp_path / "k.txt").write_text("# a kernel written by hand\n" + text + "\n")
    out = tmp_path / "out.npy"
    assert run(path, "-k", tmp_path / "k.txt", "-o", out, "--pad-mode", "circular").exit_code == 0
    np.testing.assert_allclose(np.load(out), correlate(x, kernel, pad_mode="circular"), rtol=1e-5)


def test_inline_matrix_convolve_flag_and_float64(tmp_path):
    x = np.random.default_rng(2).normal(size=(12, 13))  # float64 stays float64
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "out.npy"
    inline = "[[1,2,0],[0,0,-1],[0,0,0]]"
    assert run(tmp_path / "x.npy", "-k", inline, "--convolve", "-o", out).exit_code == 0
    got = np.load(out)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, convolve(x, np.array(json.loads(inline), float)), rtol=1e-12)
    assert not np.allclose(got, correlate(x, np.array(json.loads(inline), float)))


def test_repeated_kernels_apply_in_order_with_the_stride_at_the_end(tmp_path, signal_files):
    path, x = signal_files[1]
    out = tmp_path / "out.npy"
    assert run(path, "-k", "[1,2,1]", "-k", "[-1,0,1]", "--stride", 2, "-o", out).exit_code == 0
    expected = correlate(correlate(x, np.array([1.0, 2, 1])), np.array([-1.0, 0, 1]), stride=2)
    np.testing.assert_allclose(np.load(out), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("method", ["direct", "separable", "fft"])
def test_every_method_can_be_forced_and_agrees(tmp_path, signal_files, method):
    path, x = signal_files[2]
    out = tmp_path / "out.npy"
    result = run(path, "-k", "[[1,2,1],[2,4,2],[1,2,1]]", "--method", method, "--padding", "full", "-o", out)
    assert result.exit_code == 0, result.output
    expected = correlate(x.astype(np.float64), np.outer([1, 2, 1], [1, 2, 1]).astype(float), padding="full")
    np.testing.assert_allclose(np.load(out), expected, rtol=1e-5, atol=1e-5)


def test_explain_prints_the_plan_and_computes_nothing(tmp_path, signal_files):
    path, _ = signal_files[2]
    out = tmp_path / "never.npy"
    result = run(path, "-k", "[[1,0,-1],[2,0,-2],[1,0,-1]]", "--stride", "2,1", "--padding", "valid", "--explain", "-o", out)
    assert result.exit_code == 0, result.output
    assert "output shape: (9, 22)" in result.output
    assert "separable" in result.output and "method" in result.output
    assert not out.exists()
    result = run(path, "-k", "[[1,0,-1],[2,0,-2],[1,0,-1]]", "--explain", "--json")
    step = json.loads(result.output)[0]
    assert step["output_shape"] == [20, 24] and step["padding"] == [[1, 1], [1, 1]]


def test_json_report_and_verbose_method(tmp_path, signal_files):
    path, _ = signal_files[3]
    out = tmp_path / "out.npy"
    proc = run_process(path, "-k", tmp_path / "absent.npy", "-o", out)
    assert proc.returncode in (1, 2) and not out.exists()
    np.save(tmp_path / "k.npy", np.ones((3, 3, 3)) / 27)
    proc = run_process(path, "-k", tmp_path / "k.npy", "-o", out, "--json", "--verbose")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["status"] == "ok" and report["output_shape"] == [8, 9, 10]
    assert "method" in proc.stderr


BAD = [
    (["--stride", "0"], "--stride"),
    (["--stride", "2,x"], "--stride"),
    (["--dilation", "-1"], "--dilation"),
    (["--stride", "1,2,3"], "--stride"),
    (["--padding", "sideways"], "--padding"),
    (["--padding", "valid", "-k", "[[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1]]"], "no output samples"),
    (["--pad-mode", "bogus"], "--pad-mode"),
    (["--method", "magic"], "--method"),
    (["-k", "[[1,NaN],[0,1]]"], "NaN"),
    (["-k", "[]"], "empty"),
    (["-k", "[[[1,2],[3,4]],[[5,6],[7,8]]]"], "3"),
]


@pytest.mark.parametrize("extra, needle", BAD, ids=[" ".join(b[0]) for b in BAD])
def test_bad_parameters_give_one_line_exit_2_and_no_output(tmp_path, signal_files, extra, needle):
    path, _ = signal_files[2]
    out = tmp_path / "out.npy"
    args = [path, "-o", out] + extra
    if "-k" not in extra:
        args += ["-k", "[[1,2,1]]"]
    proc = run_process(*args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("convcli: error: "), proc.stderr
    assert needle in lines[0]
    assert "Traceback" not in proc.stderr and not out.exists()


def test_missing_input_is_failed_work_not_usage(tmp_path):
    proc = run_process(tmp_path / "nope.npy", "-k", "[1,1]", "-o", tmp_path / "o.npy")
    assert proc.returncode == 1
    assert "nope.npy" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_unknown_flag_is_one_line_usage_error(tmp_path):
    proc = run_process("x.npy", "--frobnicate")
    assert proc.returncode == 2
    assert proc.stderr.startswith("convcli: error: ") and len(proc.stderr.strip().splitlines()) == 1


def test_help_names_the_default_operation():
    result = convcli("filter", "--help")
    assert result.exit_code == 0
    assert "cross-correlation" in result.output and "--convolve" in result.output
