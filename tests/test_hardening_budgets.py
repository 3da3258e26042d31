"""Limits that hold by construction: kernel files and stdin are held to the memory budget as they are read,
a plan never stalls on a large kernel, and a signal is acted on within moments in every phase.

Each case is one of issue 15's findings: a 64 MiB text kernel peaked at 4.1 GB even with
``--memory-budget 256M``; a 4096x8192 kernel stalled the planner's SVD for minutes (and SIGTERM
with it); a broken ``.npy`` kernel header was an internal error; 1 GiB on stdin peaked at 2 GiB.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import convcli, peak_memory
from convcli.errors import KernelFileError

CONVCLI = [sys.executable, "-m", "convcli"]


def _rows_of_zeros(path, rows: int, width: int) -> None:
    """A text kernel of plain numbers, two bytes a weight: the densest the documented limits allow."""
    with open(path, "w") as fh:
        fh.writelines(" ".join(["0"] * width) + "\n" for _ in range(rows))


# convcli in a fresh interpreter that reports its own peak resident memory (VmHWM) on stdout: a parent's
# rusage would count the test process too, since a child is resident as large as its parent until exec.
_MEASURED = """
import sys
from convcli.cli import main
code = main(sys.argv[1:])
with open("/proc/self/status") as fh:
    print(next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmHWM:")))
sys.exit(code)
"""


def _peak_rss(args, zeros: int) -> tuple[int, int, str]:
    """Run ``convcli ARGS`` with ``zeros`` zero bytes piped in: exit code, peak resident bytes, stderr."""
    stdin = _zeros(zeros)
    proc = subprocess.run([sys.executable, "-c", _MEASURED, *map(str, args)], stdin=stdin, capture_output=True,
                          text=True, timeout=120)
    os.close(stdin)
    return proc.returncode, int(proc.stdout.split()[-1]), proc.stderr


# --------------------------------------------------------------------------- kernel files
def test_a_text_kernel_is_held_to_the_memory_budget_while_it_is_read(tmp_path):
    """8M weights in 16 MiB of text, with a 64M budget: refused after ~700k weights, not parsed whole."""
    from convcli.kernels import resolve

    kernel = tmp_path / "zeros.txt"
    _rows_of_zeros(kernel, 1024, 8192)
    with peak_memory() as peak:
        with pytest.raises(KernelFileError, match=r"more than 699,050 \(the most the memory budget of 64.0 MiB"):
            resolve(str(kernel), ndim=2, memory_budget="64M")
    assert peak() < 64 << 20  # the whole file as tokens took over a gigabyte


@pytest.mark.parametrize("name", ["zeros.txt", "zeros.npy", "zeros.json", "zeros.fir"])
def test_a_kernel_file_too_large_for_the_budget_is_refused_before_it_is_read(tmp_path, name):
    from convcli.kernels import resolve

    kernel = tmp_path / name
    kernel.write_bytes(b"0 " * (5 << 20))  # 10 MiB; a 32M budget allows 8 MiB of kernel file
    with peak_memory() as peak:
        with pytest.raises(KernelFileError, match="bytes is too large for a kernel file .at most 8,388,608: the most"):
            resolve(str(kernel), ndim=2, memory_budget="32M")
    assert peak() < 1 << 20


def test_a_npy_kernel_is_refused_from_its_header_when_over_the_budget(tmp_path):
    from convcli.kernels import resolve

    kernel = tmp_path / "big.npy"
    np.save(kernel, np.zeros((1024, 1024), np.int8))  # 1M weights in a 1 MiB file
    with peak_memory() as peak:
        with pytest.raises(KernelFileError, match="declares 1,048,576 weights, more than 699,050"):
            resolve(str(kernel), ndim=2, memory_budget="64M")
    assert peak() < 2 << 20  # the file's bytes; the weights as float64 would take 8 MiB


def test_large_plain_kernels_read_block_by_block_with_the_exact_values(tmp_path, monkeypatch):
    """Blocks of lines cut anywhere (here every few lines) give the weights the line-by-line reader gives."""
    from convcli.kernels import files, resolve

    rng = np.random.default_rng(7)
    weights = np.round(rng.standard_normal((3, 40, 30)) * 1000) / 64  # exact in decimal and in binary
    text = "\n\n".join("\n".join(", ".join(f"{v:.6f}" for v in row) for row in plane) for plane in weights)
    (tmp_path / "plain.txt").write_text("# description: a 3D kernel\n" + text + "\n")
    (tmp_path / "annotated.txt").write_text(text.replace("\n", "  # a comment\n", 1) + "\n")
    monkeypatch.setattr(files, "_BLOCK_CHARS", 200)
    plain = resolve(str(tmp_path / "plain.txt"), ndim=3)
    annotated = resolve(str(tmp_path / "annotated.txt"), ndim=3)
    np.testing.assert_array_equal(plain.weights[0], weights)
    np.testing.assert_array_equal(annotated.weights[0], weights)
    assert plain.description == "a 3D kernel"
    (tmp_path / "bad.txt").write_text(text[:5000] + " 1x " + text[5000:])
    line = text[:5000].count("\n") + 1
    with pytest.raises(KernelFileError, match=f"line {line}, column [0-9]+: '[-0-9.]*1x' is not a number"):
        resolve(str(tmp_path / "bad.txt"), ndim=3)


def test_annotated_kernel_text_is_bounded_too(tmp_path):
    """Read number by number, such text takes ~100 bytes of objects a weight: over 1 MiB it must be plain."""
    from convcli.kernels import resolve

    kernel = tmp_path / "commented.txt"
    kernel.write_text("\n".join(f"{i % 10}  # tap {i}" for i in range(200_000)) + "\n")
    with pytest.raises(KernelFileError, match=r"line 1: '#'.*read number by number, at most 1,048,576"):
        resolve(str(kernel), ndim=1)


def test_a_npy_kernel_with_a_broken_header_is_failed_work_not_a_bug(tmp_path):
    """numpy's header tokenizer raised tokenize.TokenError, which escaped as an internal error (exit 70)."""
    header = b"{'descr': '<f8', 'fortran_order': False, 'shape': (3, 3"
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    (tmp_path / "broken.npy").write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header
                                          + bytes(72))
    np.save(tmp_path / "x.npy", np.zeros((5, 5)))
    result = convcli("filter", tmp_path / "x.npy", "-k", tmp_path / "broken.npy", "-o", tmp_path / "out.npy")
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith(f"convcli: error: {tmp_path / 'broken.npy'}: not a readable .npy array")
    assert result.stderr.count("\n") == 1 and not (tmp_path / "out.npy").exists()


# --------------------------------------------------------------------------- planning
@pytest.fixture
def no_svd(monkeypatch):
    """Any SVD on a large matrix fails the test: LAPACK cannot be interrupted, and took minutes."""
    svd = np.linalg.svd

    def guarded(a, *args, **kwargs):
        assert np.asarray(a).size <= 1 << 17, f"an SVD of a {np.shape(a)} matrix"
        return svd(a, *args, **kwargs)

    monkeypatch.setattr(np.linalg, "svd", guarded)


def test_planning_a_large_kernel_runs_no_large_svd(no_svd):
    from convcli.engine import make_plan
    from convcli.kernels import resolve

    noise = np.random.default_rng(0).standard_normal((700, 900))
    plan = make_plan((48, 64), noise)
    assert not plan.choice.separable and plan.method in ("fft", "opencv")
    gaussian = resolve("gaussian:sigma=60", ndim=2)  # 481x481, found rank 1 through its largest weight
    plan = make_plan((600, 800), gaussian.weights[0])
    assert plan.choice.separable
    facts = gaussian.describe()
    assert facts["separable"] is True and facts["rank"] is None  # not computed: too large for an SVD


def test_kernels_show_says_the_rank_of_a_large_kernel_is_not_computed(tmp_path, no_svd):
    np.save(tmp_path / "k.npy", np.random.default_rng(1).standard_normal((600, 600)))
    result = convcli("kernels", "show", tmp_path / "k.npy")
    assert result.exit_code == 0, result.output
    assert "separable: no   rank: not computed (too large)" in result.stdout


def test_forcing_lowrank_on_a_large_kernel_is_refused_naming_its_size(no_svd):
    from convcli.engine import correlate
    from convcli.errors import ParameterError

    with pytest.raises(ParameterError, match="a 700x900 kernel would take minutes to factor"):
        correlate(np.zeros((48, 64), np.float32), np.ones((700, 900)) + np.eye(700, 900), method="lowrank")


# --------------------------------------------------------------------------- signals
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_a_large_kernels_planning_acts_at_once(tmp_path, signum):
    """SIGTERM sent while a 4096x8192 kernel was being planned took 54 s to act, or did not act (its SVD)."""
    np.save(tmp_path / "k.npy", np.random.default_rng(0).integers(-100, 100, (4096, 4096)).astype(np.int8))
    np.save(tmp_path / "x.npy", np.random.default_rng(1).random((48, 64)).astype(np.float32))
    started = time.monotonic()
    proc = subprocess.Popen([*CONVCLI, "filter", tmp_path / "x.npy", "-k", tmp_path / "k.npy", "-o",
                             tmp_path / "out.npy"], stderr=subprocess.PIPE)
    time.sleep(1.0)  # reading the kernel, planning or filtering by now
    sent = time.monotonic()
    proc.send_signal(signum)
    stderr = proc.communicate(timeout=120)[1].decode()
    if proc.returncode == 0:  # it finished before the signal: then it never stalled either
        assert sent - started < 5.0
        return
    assert proc.returncode == -signum, stderr
    assert time.monotonic() - sent < 5.0
    assert "Traceback" not in stderr and not (tmp_path / "out.npy").exists()


# --------------------------------------------------------------------------- stdin
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="VmHWM is read from /proc")
def test_stdin_is_held_once_in_memory():
    """Chunks joined at the end held the input twice: 192 MiB piped in peaked at 431 MB."""
    size = 192 << 20
    code, rss, err = _peak_rss(["filter", "-", "-k", "box:3", "-o", "-"], size)
    assert code == 1 and "unrecognised file format" in err
    assert rss < size * 1.25 + (64 << 20), f"peak {rss >> 20} MiB for {size >> 20} MiB on stdin"


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="VmHWM is read from /proc")
def test_stdin_beyond_the_budget_is_refused_as_it_is_read():
    code, rss, err = _peak_rss(["filter", "-", "-k", "box:3", "--memory-budget", "32M", "-o", "-"], 256 << 20)
    assert code == 1 and err.splitlines() == [
        "convcli: error: <stdin>: more than 32.0 MiB on stdin, over the memory budget (raise it with --memory-budget)"]
    assert rss < (32 << 20) + (64 << 20), f"peak {rss >> 20} MiB"


def _zeros(size: int) -> int:
    """A readable stream of ``size`` zero bytes for a child's stdin (a pipe fed by a thread)."""
    import threading

    read, write = os.pipe()

    def feed():
        block = bytes(1 << 20)
        try:
            with os.fdopen(write, "wb") as fh:
                for _ in range(size >> 20):
                    fh.write(block)
        except BrokenPipeError:  # refused part way: the reader is gone
            pass

    threading.Thread(target=feed, daemon=True).start()
    return read
