"""Streamed execution: a .npy volume larger than --memory-budget is filtered band by band, file to file.

The engine fills an ``out=`` array (a memory-mapped file here) and, with
``on_rows``, reports finished rows so their pages can be dropped; the io layer
maps an over-budget ``.npy`` read-only and writes a memory-mapped temporary
renamed at the end.  Results must equal the in-memory path (bit-exact for the
same method), the resident memory must stay far below the volume, and a
failure must leave no temporary file behind.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import convcli
from convcli.engine import bands, convolve, correlate, make_plan, rank1_factors
from convcli.errors import ParameterError

REPO = Path(__file__).resolve().parents[1]
HARNESS = REPO / "bench" / "hostile_harness.py"
HOSTILE = REPO.parent / "shared" / "tools" / "hostile.py"

# 160^3 float32 = 16 MB of samples; reading and filtering it in memory is
# counted as 12 bytes a sample (49 MB), so 40M forces streaming, while the
# bands in flight (about 3 MB per thread: 1 MiB of padded input rows, a pass's
# intermediate, the output rows) fit even with 8 threads.
SHAPE = (160, 160, 160)
BUDGET = "40M"


def _volume(path: Path, shape=SHAPE, dtype=np.float32, seed=0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    np.save(path, x)
    return x


def _mapped(path: Path, x: np.ndarray) -> np.memmap:
    np.save(path, x)
    return np.load(path, mmap_mode="r")


def _leftovers(folder: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


# --------------------------------------------------------------------------- engine
@pytest.mark.parametrize("method", ["direct", "separable"])
@pytest.mark.parametrize("pad_mode", ["reflect", "zeros", "circular"])
def test_engine_out_and_on_rows_equal_the_in_memory_result(tmp_path, method, pad_mode):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((57, 11, 9)).astype(np.float32)
    kernel = np.outer(np.outer([1.0, 2, 1], [1.0, 0, -1]), [0.5, 1.0, 0.5]).reshape(3, 3, 3)
    expected = correlate(x, kernel, method=method, pad_mode=pad_mode)
    src = _mapped(tmp_path / "x.npy", x)
    out = np.lib.format.open_memmap(tmp_path / "out.npy", mode="w+", dtype=np.float32, shape=expected.shape)
    calls = []
    with _tiny_bands():
        got = correlate(src, kernel, method=method, pad_mode=pad_mode, out=out,
                        on_rows=lambda i, o: calls.append((i, o)))
    assert got is out
    np.testing.assert_array_equal(out, expected)  # the same method: bit-exact
    # Rows are reported in order and end with the whole output.
    assert len(calls) > 3 and calls[-1][1] == expected.shape[0]
    assert [c[1] for c in calls] == sorted(c[1] for c in calls)
    assert all(0 <= i <= x.shape[0] for i, _ in calls)


@given(
    shape=st.tuples(st.integers(1, 40), st.integers(1, 9)),
    taps=st.tuples(st.integers(1, 5), st.integers(1, 4)),
    stride=st.integers(1, 3),
    dilation=st.integers(1, 2),
    padding=st.sampled_from(["same", "valid", "full", 2]),
    pad_mode=st.sampled_from(["reflect", "symmetric", "replicate", "circular", "zeros"]),
    channels=st.sampled_from([None, 2]),
)
@settings(max_examples=40, derandomize=True, deadline=None)
def test_streaming_is_bit_exact_for_every_geometry(shape, taps, stride, dilation, padding, pad_mode, channels):
    rng = np.random.default_rng(sum(shape) * 31 + sum(taps))
    full = shape + ((channels,) if channels else ())
    x = rng.standard_normal(full).astype(np.float32)
    kernel = rng.standard_normal(taps)
    geometry = dict(stride=stride, dilation=dilation, padding=padding, pad_mode=pad_mode, method="direct",
                    channel_axis=-1 if channels else None)
    if padding == "valid" and any((t - 1) * dilation + 1 > n for t, n in zip(taps, shape)):
        return  # nothing to compute: the engine refuses, streamed or not
    try:
        expected = correlate(x, kernel, **geometry)
    except ParameterError:
        return  # a geometry the engine refuses (padding wider than a reflect border allows)
    out = np.full(expected.shape, np.nan, np.float32)
    rows = []
    with _tiny_bands():
        correlate(x, kernel, out=out, on_rows=lambda i, o: rows.append((i, o)), **geometry)
    np.testing.assert_array_equal(out, expected)
    assert rows[-1][1] == expected.shape[0]
    assert [o for _, o in rows] == sorted(o for _, o in rows)
    assert all(0 <= i <= shape[0] for i, _ in rows)


@contextlib.contextmanager
def _tiny_bands():
    """Bands of a few rows, run on threads even for tiny work: many waves on a small input."""
    saved = bands.BAND_BYTES, bands.PARALLEL_WORK
    bands.BAND_BYTES, bands.PARALLEL_WORK = 64, 0
    try:
        yield
    finally:
        bands.BAND_BYTES, bands.PARALLEL_WORK = saved


def test_engine_streamed_auto_agrees_with_every_in_memory_method(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((40, 16, 3)).astype(np.float32)  # an RGB image, channels last
    kernel = rng.standard_normal((5, 5))
    out = np.empty((40, 16, 3), np.float32)
    convolve(x, kernel, channel_axis=-1, out=out, on_rows=lambda i, o: None)
    for method in ("direct", "fft"):
        np.testing.assert_allclose(out, convolve(x, kernel, channel_axis=-1, method=method), rtol=1e-4, atol=1e-4)


def test_engine_out_in_any_layout_is_filled(tmp_path):
    x = np.random.default_rng(3).standard_normal((12, 10)).astype(np.float64)
    kernel = np.ones((3, 3))
    out = np.empty((10, 12)).T  # a non-contiguous view: filled through a copy
    assert correlate(x, kernel, method="direct", out=out) is out
    np.testing.assert_array_equal(out, correlate(x, kernel, method="direct"))


def test_engine_refuses_an_out_that_does_not_fit():
    x = np.zeros((8, 8), np.float32)
    with pytest.raises(ParameterError, match="needs"):
        correlate(x, np.ones((3, 3)), out=np.empty((8, 7), np.float32))
    with pytest.raises(ParameterError, match="needs"):
        correlate(x, np.ones((3, 3)), out=np.empty((8, 8), np.float64))
    frozen = np.empty((8, 8), np.float32)
    frozen.flags.writeable = False
    with pytest.raises(ParameterError, match="read-only"):
        correlate(x, np.ones((3, 3)), out=frozen)


def test_streamed_plans_use_band_methods_only():
    kernel = np.random.default_rng(4).standard_normal((9, 9, 9))  # FFT or OpenCV territory in memory
    plan = make_plan((64, 64, 64), kernel, streamed=True)
    assert plan.method in ("direct", "separable")
    with pytest.raises(ParameterError, match="streamed"):
        make_plan((64, 64, 64), kernel, method="fft", streamed=True)
    with pytest.raises(ParameterError, match="streamed"):
        correlate(np.zeros((4, 8, 8), np.float32), np.ones((3, 3)), on_rows=lambda i, o: None)  # a batch of 4


# --------------------------------------------------------------------------- CLI
def test_cli_filters_a_volume_over_the_budget_like_the_in_memory_path(tmp_path):
    _volume(tmp_path / "big.npy")
    for method in ("direct", "auto"):
        streamed, whole = tmp_path / f"s_{method}.npy", tmp_path / f"m_{method}.npy"
        r = convcli("filter", str(tmp_path / "big.npy"), "-k", "box:3", "--method", method,
                                "--memory-budget", BUDGET, "-o", str(streamed))
        assert r.exit_code == 0, r.output
        assert "streamed" in r.output
        r = convcli("filter", str(tmp_path / "big.npy"), "-k", "box:3", "--method", method,
                                "-o", str(whole))
        assert r.exit_code == 0, r.output
        a, b = np.load(streamed), np.load(whole)
        assert a.dtype == b.dtype == np.float32 and a.shape == SHAPE
        if method == "direct":
            np.testing.assert_array_equal(a, b)
        else:
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert _leftovers(tmp_path, {"big.npy", "s_direct.npy", "m_direct.npy", "s_auto.npy", "m_auto.npy"}) == []


@pytest.mark.parametrize("spec", ["box:3", "gaussian:sigma=1", "laplacian", "random.npy"])
def test_streamed_and_in_memory_differ_only_as_the_readme_says(tmp_path, spec):
    """The same method gives the same bits; auto in memory may sum in another order (OpenCV): a few ulps at most.

    The README promised bit-identical results, but the in-memory run picked
    opencv where the streamed one picked separable: 1.8e-7 apart for box:3.
    """
    x = _volume(tmp_path / "big.npy")
    if spec == "random.npy":
        np.save(tmp_path / spec, np.random.default_rng(3).standard_normal((3, 3, 3)))
        spec = str(tmp_path / spec)
    from convcli.kernels import resolve

    weights = resolve(spec, ndim=3).weights[0]
    method = "separable" if rank1_factors(weights) is not None else "direct"
    results = {}
    for name, extra in (("streamed", ["--memory-budget", BUDGET]), ("memory", [])):
        for chosen in ("auto", method):
            out = tmp_path / f"{name}_{chosen}.npy"
            r = convcli("filter", str(tmp_path / "big.npy"), "-k", spec, "--method", chosen, "-o", str(out), *extra)
            assert r.exit_code == 0, r.output
            assert ("streamed" in r.output) == (name == "streamed")
            results[name, chosen] = np.load(out)
    np.testing.assert_array_equal(results["streamed", method], results["memory", method])
    np.testing.assert_array_equal(results["streamed", "auto"], results["memory", method])  # auto streams by it
    scale = np.abs(weights).sum() * np.abs(x).max()
    assert np.abs(results["streamed", "auto"] - results["memory", "auto"]).max() <= 2 * np.finfo(np.float32).eps * scale


def test_explain_names_the_method_a_streamed_run_uses(tmp_path):
    import json

    _volume(tmp_path / "big.npy")
    for spec in ("box:3", "gaussian:sigma=1.5", "laplacian"):
        args = ["filter", str(tmp_path / "big.npy"), "-k", spec, "--memory-budget", BUDGET, "--json"]
        explained = convcli(*(args + ["--explain"]))
        assert explained.exit_code == 0, explained.output
        ran = convcli(*(args + ["-o", str(tmp_path / "out.npy")]))
        assert ran.exit_code == 0, ran.output
        steps = json.loads(explained.stdout)
        report = json.loads(ran.stdout.strip().splitlines()[-1])
        methods = steps[0]["methods"]
        assert methods == report["kernels"][0]["methods"], (spec, steps, report)
        assert set(methods) <= {"direct", "separable"} and "streamed" in steps[0]["why"]


def test_cli_streams_stride_and_float64(tmp_path):
    # 96 x 128 x 128 float64: 12.6 MB, counted as 24 bytes a sample in memory (38 MB).
    x = _volume(tmp_path / "big.npy", shape=(96, 128, 128), dtype=np.float64)
    r = convcli("filter", str(tmp_path / "big.npy"), "-k", "box:3", "--stride", "2",
                            "--memory-budget", "30M", "-o", str(tmp_path / "out.npy"))
    assert r.exit_code == 0, r.output
    assert "streamed" in r.output
    got = np.load(tmp_path / "out.npy")
    assert got.dtype == np.float64 and got.shape == (48, 64, 64)
    np.testing.assert_allclose(got, correlate(x, np.full((3, 3, 3), 1 / 27), stride=2), rtol=1e-12, atol=1e-12)


def test_cli_refuses_to_stream_a_chain_and_says_why(tmp_path):
    _volume(tmp_path / "big.npy")
    r = convcli("filter", str(tmp_path / "big.npy"), "-k", "box:3", "-k", "box:3",
                            "--memory-budget", BUDGET, "-o", str(tmp_path / "out.npy"))
    assert r.exit_code == 1
    assert "single kernel" in r.output and "chain of 2 kernels" in r.output
    assert _leftovers(tmp_path, {"big.npy"}) == []


def test_cli_keeps_the_budget_refusal_for_outputs_not_written_in_place(tmp_path):
    _volume(tmp_path / "big.npy")
    r = convcli("filter", str(tmp_path / "big.npy"), "-k", "box:3", "--memory-budget", BUDGET,
                            "-o", str(tmp_path / "out.npz"))
    assert r.exit_code == 1
    assert "memory budget" in r.output
    assert _leftovers(tmp_path, {"big.npy"}) == []


def test_cli_refuses_a_truncated_npy_over_the_budget(tmp_path):
    _volume(tmp_path / "big.npy")
    data = (tmp_path / "big.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(data[:-100])
    r = convcli("filter", str(tmp_path / "cut.npy"), "-k", "box:3", "--memory-budget", BUDGET,
                            "-o", str(tmp_path / "out.npy"))
    assert r.exit_code == 1 and "truncated" in r.output
    assert _leftovers(tmp_path, {"big.npy", "cut.npy"}) == []


def test_failure_after_the_mapped_temporary_exists_leaves_nothing(tmp_path, monkeypatch):
    _volume(tmp_path / "big.npy")
    dest = tmp_path / "out.npy"
    dest.write_bytes(b"previous")
    seen = []

    def failing(plan, x, kernel, *, out=None, on_rows=None, **_):
        seen.append(_leftovers(tmp_path, {"big.npy", "out.npy"}))  # the temporary is there now
        out[:3] = 1.0
        from convcli.errors import DataError

        raise DataError("simulated failure mid-volume")

    monkeypatch.setattr("convcli.engine.execute", failing)
    r = convcli("filter", str(tmp_path / "big.npy"), "-k", "box:3", "--memory-budget", BUDGET,
                            "-o", str(dest))
    assert r.exit_code == 1 and "simulated failure" in r.output
    assert seen and len(seen[0]) == 1 and ".convcli-tmp" in seen[0][0]
    assert _leftovers(tmp_path, {"big.npy", "out.npy"}) == []
    assert dest.read_bytes() == b"previous"


def test_a_full_disk_is_refused_before_the_mapped_output_is_written(tmp_path):
    """The temporary's blocks are reserved up front: ENOSPC is one error line, never a SIGBUS mid-volume."""
    _volume(tmp_path / "big.npy")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        previous = disk / "out.npy"
        previous.write_bytes(b"previous" * 1000)
        (disk / "filler").write_bytes(b"\0" * (8 << 20))  # 20 MB - 8 MB: no room for 16 MB more
        r = convcli("filter", str(tmp_path / "big.npy"), "-k", "box:3", "--memory-budget", BUDGET,
                                "-o", str(previous))
        assert r.exit_code == 1
        assert "No space left" in r.output
        assert sorted(p.name for p in disk.iterdir()) == ["filler", "out.npy"]
        assert previous.read_bytes() == b"previous" * 1000
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


# --------------------------------------------------------------------------- NIfTI
def _nifti(path: Path, shape=(60, 100, 200), dtype=np.float32) -> None:
    nib = pytest.importorskip("nibabel")
    x = np.random.default_rng(6).standard_normal(shape).astype(dtype)
    affine = np.array([[0.8, 0, 0, -10], [0, 1.2, 0, 5], [0, 0, 2.0, 3], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(x, affine), str(path))


@pytest.mark.parametrize("args", [
    ["--stride", "1,2,3", "--padding", "valid"],
    ["--convolve", "--pad-mode", "zeros", "--stride", "2"],
])
def test_cli_streams_a_raw_nifti_volume_like_the_in_memory_path(tmp_path, args):
    """x fastest on disk: filtered as the (z, y, x) transpose; data, affine and voxel sizes as in memory."""
    nib = pytest.importorskip("nibabel")
    _nifti(tmp_path / "v.nii")  # 4.8 MB float32, 14.4 MB to read and filter in memory
    kernel = tmp_path / "k.npy"
    np.save(kernel, np.arange(1, 28, dtype=float).reshape(3, 3, 3) * np.array([1, -2, 0.5])[:, None, None])
    outputs = []
    for budget in (["--memory-budget", "13M"], []):
        dest = tmp_path / f"out{len(outputs)}.nii"
        r = convcli(*(["filter", str(tmp_path / "v.nii"), "-k", str(kernel), "-o", str(dest)] + args + budget))
        assert r.exit_code == 0, r.output
        assert ("streamed" in r.output) == bool(budget)
        outputs.append(nib.load(str(dest)))
    streamed, whole = outputs
    assert streamed.shape == whole.shape and streamed.get_data_dtype() == whole.get_data_dtype() == np.float32
    np.testing.assert_allclose(streamed.get_fdata(), whole.get_fdata(), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(streamed.affine, whole.affine)
    assert streamed.header.get_zooms() == whole.header.get_zooms()
    assert _leftovers(tmp_path, {"v.nii", "k.npy", "out0.nii", "out1.nii"}) == []


def test_nifti_that_cannot_be_streamed_keeps_the_clear_refusal(tmp_path):
    pytest.importorskip("nibabel")
    _nifti(tmp_path / "v.nii", dtype=np.int16)  # an integer result needs range conversion: not streamed
    r = convcli("filter", str(tmp_path / "v.nii"), "-k", "box:3", "--memory-budget", "3M",
                            "-o", str(tmp_path / "out.nii"))
    assert r.exit_code == 1 and "only an unscaled little-endian float" in r.output
    _nifti(tmp_path / "f.nii")
    r = convcli("filter", str(tmp_path / "f.nii"), "-k", "box:3", "--memory-budget", "13M",
                            "-o", str(tmp_path / "out.npy"))  # across formats the layouts differ
    assert r.exit_code == 1 and "its own format" in r.output
    assert _leftovers(tmp_path, {"v.nii", "f.nii"}) == []


# --------------------------------------------------------------------------- a file that shrinks mid-run
# The child truncates its own input as the mapped output opens (after the input was
# mapped and vetted, before a sample is filtered): exactly what another program cutting
# the file under a long run does, at a moment the test can choose.
_SHRINKING = textwrap.dedent("""
    import os, sys
    from convcli import io
    from convcli.cli import main

    opened = io.mapped_output

    def shrinking(*args, **kwargs):
        os.truncate(sys.argv[1], os.path.getsize(sys.argv[1]) // 2)
        return opened(*args, **kwargs)

    io.mapped_output = shrinking
    sys.exit(main(["filter", sys.argv[1], "-k", "box:3", "--memory-budget", sys.argv[3], "-o", sys.argv[2]]))
""")


@pytest.mark.parametrize("name, budget", [("big.npy", BUDGET), ("v.nii", "13M")])
def test_an_input_that_shrinks_mid_stream_is_one_error_line_and_leaves_nothing(tmp_path, name, budget):
    """A streamed input cut by another program is exit 1 and one line, not a SIGBUS with the temporary left."""
    if name.endswith(".nii"):
        _nifti(tmp_path / name)
    else:
        _volume(tmp_path / name)
    dest = tmp_path / ("out" + Path(name).suffix)
    dest.write_bytes(b"previous")
    proc = subprocess.run([sys.executable, "-c", _SHRINKING, str(tmp_path / name), str(dest), budget],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"convcli: error: {tmp_path / name}: "), lines
    assert "shrank" in lines[0]
    assert _leftovers(tmp_path, {name, dest.name}) == []
    assert dest.read_bytes() == b"previous"


# --------------------------------------------------------------------------- memory
_CHILD = textwrap.dedent("""
    import sys
    import numpy as np
    from convcli import engine, io, kernels
    from convcli.pipeline import filter as filtering
    from convcli.pipeline.options import FilterOptions
    from convcli.io import arrays

    def hwm():
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024

    base = hwm()
    options = FilterOptions(kernels=("box:3",), memory_budget=io.limits.parse_size(sys.argv[3]))
    report = filtering.filter_file(sys.argv[1], sys.argv[2], options)
    print(base, hwm(), report.output_shape[0])
""")


BIG = (370, 370, 370)  # float32: 202.6 MB


@pytest.fixture(scope="module")
def big_volume(tmp_path_factory) -> Path:
    """A 200 MB float32 volume of noise (real pages, not a sparse file), written slab by slab."""
    src = tmp_path_factory.mktemp("big") / "big.npy"
    x = np.lib.format.open_memmap(src, mode="w+", dtype=np.float32, shape=BIG)
    rng = np.random.default_rng(5)
    for z in range(0, BIG[0], 37):
        x[z:z + 37] = rng.standard_normal((37,) + BIG[1:], dtype=np.float32)
    x.flush()
    del x
    return src


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="VmHWM is read from /proc")
def test_peak_memory_of_a_streamed_200mb_volume_stays_far_below_it(tmp_path, big_volume):
    shape, src = BIG, big_volume
    volume = os.path.getsize(src)
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(src), str(tmp_path / "out.npy"), "64M"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    base, peak, rows = (int(v) for v in proc.stdout.split())
    assert rows == shape[0]
    # The data's share of the peak: bands in flight, not the 200 MB in and out.
    assert peak - base < volume // 3, f"peak {peak >> 20} MiB, baseline {base >> 20} MiB"
    # Spot-check the result against the in-memory engine on a slab (with its halo).
    got = np.load(tmp_path / "out.npy", mmap_mode="r")
    src_map = np.load(src, mmap_mode="r")
    slab = np.array(src_map[100:140])
    expected = correlate(slab, np.full((3, 3, 3), 1 / 27), method="separable", padding="valid")[:, :, :]
    inner = np.array(got[101:139, 1:-1, 1:-1])
    np.testing.assert_allclose(inner, expected, rtol=1e-5, atol=1e-6)


def test_sigint_mid_stream_removes_the_mapped_temporary(tmp_path, big_volume):
    dest = tmp_path / "out.npy"
    # The direct method (27 taps a voxel) keeps the run busy for seconds.
    proc = subprocess.Popen([sys.executable, "-m", "convcli", "filter", str(big_volume), "-k", "box:3", "--method",
                             "direct", "--memory-budget", "64M", "-o", str(dest)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while not list(tmp_path.iterdir()) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)
        assert [p.name for p in tmp_path.iterdir()][0].startswith(".out.npy.")  # the mapped temporary
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)  # stops at once: the direct method would take far longer to finish
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode in (-signal.SIGINT, 130)
    assert b"Traceback" not in proc.stderr.read()
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- hostile scenario
@pytest.mark.skipif(not HOSTILE.exists(), reason="needs ../shared/tools/hostile.py")
def test_hostile_memory_budget_2x_scenario_passes(tmp_path):
    proc = subprocess.run([sys.executable, str(HARNESS), str(tmp_path / "h"), "--hostile", str(HOSTILE),
                           "--only", "memory_budget_2x"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert '"scenarios_matching": 1' in proc.stdout
