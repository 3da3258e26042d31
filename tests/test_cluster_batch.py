"""Batches of files sent to a real Dask cluster on 127.0.0.1: what the local batch does, file for file.

The fixture starts a scheduler (in this process) and two worker processes of
one thread each, bound to 127.0.0.1, and stops them after the module.  One
failure is allowed per task (Dask's default is 3), so a file that kills its
workers is given up after two deaths instead of four; each worker takes one
task at a time, so a killed worker holds only the file it was running.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

distributed = pytest.importorskip("distributed")
dask = pytest.importorskip("dask")

from conftest import ROOT, convcli, convcli_on_terminal, leftovers  # noqa: E402

KERNEL = "gaussian:sigma=2"
SLOW = ("--method", "direct")  # a 25x25 direct correlation: long enough a file to kill a worker in the middle


@pytest.fixture(scope="module")
def weights_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("xdg-cache"))


@pytest.fixture(scope="module")
def cluster(weights_cache):
    settings = {"distributed.scheduler.allowed-failures": 1, "distributed.scheduler.worker-saturation": 1.0}
    with dask.config.set(settings):
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                      dashboard_address=None, silence_logs=50,
                                      env={"XDG_CACHE_HOME": weights_cache}) as running:
            with distributed.Client(running) as client:
                yield running.scheduler_address, client


@pytest.fixture(autouse=True)
def _env(weights_cache, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", weights_cache)
    monkeypatch.delenv("CONVCLI_WEIGHTS", raising=False)
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)


def _photos(folder: Path, count: int, shape: tuple[int, ...], seed: int) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(folder / f"p{i:02d}.png")
    return folder


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Six small photos (RGB and grey, two sizes) and the local batch's outputs and JSON records for them."""
    root = tmp_path_factory.mktemp("photos")
    folder = _photos(root / "in", 4, (48, 64, 3), seed=1)
    grey = np.random.default_rng(2).integers(0, 256, (40, 30), dtype=np.uint8)
    Image.fromarray(grey).save(folder / "grey.png")
    (folder / "sub").mkdir()
    Image.fromarray(grey.T.copy()).save(folder / "sub" / "grey2.png")
    run = convcli("filter", folder, "-o", root / "local", "-k", KERNEL, "--json", "-j", "2")
    assert run.exit_code == 0, run.stderr
    return folder, root / "local", _records(run.stdout, root / "local")


@pytest.fixture(scope="module")
def slow_photos(tmp_path_factory):
    """Ten photos that each take a good part of a second, and the local batch's outputs."""
    root = tmp_path_factory.mktemp("slow")
    folder = _photos(root / "in", 10, (240, 320, 3), seed=3)
    np.save(root / "k.npy", np.random.default_rng(4).random((25, 25)))
    run = convcli("filter", folder, "-o", root / "local", "-k", root / "k.npy", *SLOW, "-j", "2")
    assert run.exit_code == 0, run.stderr
    return folder, root / "local", root / "k.npy"


def _records(stdout: str, out: Path) -> list[dict]:
    """The JSON records without their timings, outputs named relative to the output folder."""
    records = [json.loads(line) for line in stdout.splitlines()]
    for record in records:
        record.pop("seconds", None)
        if record.get("output"):
            record["output"] = os.path.relpath(record["output"], out)
    return records


def _outputs(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _convcli_tasks(client, run):
    """What ``run()`` returned, and the keys of the tasks the cluster ran meanwhile."""
    with distributed.get_task_stream(client) as stream:
        result = run()
    return result, [t["key"] for t in stream.data]


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("convcli: error:")]


# --------------------------------------------------------------------------- the same work, elsewhere
def test_a_batch_on_the_cluster_writes_what_the_local_batch_writes(cluster, photos, tmp_path):
    address, client = cluster
    folder, local, records = photos
    run, keys = _convcli_tasks(client, lambda: convcli("filter", folder, "-o", tmp_path / "out", "-k", KERNEL,
                                                         "--json", "--scheduler", address))
    assert run.exit_code == 0, run.stderr
    assert run.stderr == "convcli: 6 done, 0 failed in " + run.stderr.split(" in ")[1]
    assert _outputs(tmp_path / "out") == _outputs(local)
    assert _records(run.stdout, tmp_path / "out") == records
    assert any(key.startswith("convcli-") for key in keys)  # it did run there


def test_dask_scheduler_address_in_the_environment_sends_batches_too_unless_j_is_given(cluster, photos, tmp_path):
    address, client = cluster
    folder, local, _ = photos
    env = {"DASK_SCHEDULER_ADDRESS": address}
    run, keys = _convcli_tasks(client, lambda: convcli("filter", folder, "-o", tmp_path / "a", "-k", KERNEL, env=env))
    assert run.exit_code == 0, run.stderr
    assert any(key.startswith("convcli-") for key in keys)
    run, keys = _convcli_tasks(client, lambda: convcli("filter", folder, "-o", tmp_path / "b", "-k", KERNEL, "-j", "1",
                                                         env=env))
    assert run.exit_code == 0, run.stderr
    assert not any(key.startswith("convcli-") for key in keys)  # -j: this machine
    assert _outputs(tmp_path / "a") == _outputs(tmp_path / "b") == _outputs(local)


def test_relative_paths_and_kernel_files_reach_workers_in_another_folder(cluster, photos, tmp_path, monkeypatch):
    address, _ = cluster
    folder, local, records = photos
    np.save(tmp_path / "k.npy", np.full((3, 3), 1 / 9))
    want = convcli("filter", folder, "-o", tmp_path / "want", "-k", tmp_path / "k.npy", "-j", "1")
    monkeypatch.chdir(tmp_path)  # the workers' working folder is the one they started in, not this one
    os.symlink(folder, "in")
    run = convcli("filter", "in", "-o", "out", "-k", "k.npy", "--json", "--scheduler", address)
    assert want.exit_code == 0 and run.exit_code == 0, run.stderr
    assert _outputs(tmp_path / "out") == _outputs(tmp_path / "want")
    assert [json.loads(line)["input"] for line in run.stdout.splitlines()] == [r["input"].replace(str(folder), "in")
                                                                              for r in records]


def test_skip_existing_leaves_an_existing_output_alone(cluster, photos, tmp_path):
    address, _ = cluster
    folder, local, _ = photos
    out = tmp_path / "out"
    out.mkdir()
    (out / "p01.png").write_bytes(b"kept")
    run = convcli("filter", folder, "-o", out, "-k", KERNEL, "--skip-existing", "--json", "--scheduler", address)
    assert run.exit_code == 0, run.stderr
    status = {Path(r["input"]).name: r["status"] for r in map(json.loads, run.stdout.splitlines())}
    assert status.pop("p01.png") == "skipped" and set(status.values()) == {"ok"}
    assert (out / "p01.png").read_bytes() == b"kept"
    expected = _outputs(local)
    expected["p01.png"] = b"kept"
    assert _outputs(out) == expected
    assert "5 done, 0 failed, 1 skipped" in run.stderr


def test_a_corrupt_photo_is_one_line_and_the_others_are_written(cluster, photos, tmp_path):
    address, _ = cluster
    folder, local, _ = photos
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for name in ("p00.png", "p01.png", "grey.png"):
        (mixed / name).write_bytes((folder / name).read_bytes())
    (mixed / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    here = convcli("filter", mixed, "-o", tmp_path / "here", "-k", KERNEL, "-j", "2")
    run = convcli("filter", mixed, "-o", tmp_path / "there", "-k", KERNEL, "--scheduler", cluster[0])
    assert run.exit_code == here.exit_code == 1
    assert _error_lines(run.stderr) == _error_lines(here.stderr)
    assert len(_error_lines(run.stderr)) == 1 and str(mixed / "bad.png") in run.stderr
    assert "Traceback" not in run.stderr and "3 done, 1 failed" in run.stderr
    assert _outputs(tmp_path / "there") == {n: local.joinpath(n).read_bytes() for n in ("grey.png", "p00.png", "p01.png")}
    assert leftovers(tmp_path) == []


def test_fail_fast_stops_the_cluster_batch(cluster, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a-bad.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    run = convcli("filter", folder, "-o", tmp_path / "out", "-k", KERNEL, "--fail-fast", "--scheduler", cluster[0])
    assert run.exit_code == 1 and len(_error_lines(run.stderr)) == 1
    assert "a-bad.png" in run.stderr and "--fail-fast" in run.stderr


def test_the_progress_bar_counts_the_clusters_files(cluster, photos, tmp_path):
    folder, _, _ = photos
    code, shown = convcli_on_terminal("filter", folder, "-o", tmp_path / "out", "-k", KERNEL, "--scheduler", cluster[0])
    assert code == 0, shown
    assert "6/6" in shown and "files/s" in shown and "6 done, 0 failed" in shown


# --------------------------------------------------------------------------- classify
def test_classify_on_the_cluster_predicts_what_this_machine_does_and_loads_the_weights_once_per_worker(
        cluster, photos):
    address, client = cluster
    folder, _, _ = photos
    here = convcli("classify", folder, "--json", "--top", "3", "-j", "2")
    there = convcli("classify", folder, "--json", "--top", "3", "--scheduler", address)
    assert here.exit_code == there.exit_code == 0, there.stderr
    assert there.stdout == here.stdout and len(there.stdout.splitlines()) == 6

    def loaded():  # on a worker: the networks its process holds (by identity)
        from convcli.nn import weights

        return [id(model) for model in weights._MODELS.values()]

    models = client.run(loaded)
    again = convcli("classify", folder, "--json", "--top", "3", "--scheduler", address)
    assert again.stdout == here.stdout
    assert client.run(loaded) == models  # the same network object: not loaded again for these files
    assert all(len(ids) <= 1 for ids in models.values()) and any(models.values())


def test_j_with_an_explicit_scheduler_and_a_scheduler_for_one_photo_are_refused(photos, tmp_path):
    folder, _, _ = photos
    run = convcli("classify", folder, "-j", "2", "--scheduler", "tcp://127.0.0.1:9")
    assert run.exit_code == 2 and run.stderr.startswith("convcli: error: -j/--jobs: counts this machine's")
    run = convcli("filter", folder, "-o", tmp_path / "o", "-k", KERNEL, "-j", "2", "--scheduler", "tcp://127.0.0.1:9")
    assert run.exit_code == 2 and run.stderr.count("\n") == 1
    run = convcli("classify", folder / "p00.png", "--scheduler", "tcp://127.0.0.1:9")
    assert run.exit_code == 2 and run.stderr.startswith("convcli: error: --scheduler: classifies several images")
    assert not (tmp_path / "o").exists()


def test_an_unreachable_scheduler_is_one_line_for_a_batch(photos, tmp_path):
    folder, _, _ = photos  # classify's batch reaches the scheduler through the same run (10 s of Dask retries each)
    run = convcli("filter", folder, "-o", tmp_path / "o", "-k", KERNEL, "--json", "--scheduler", "tcp://127.0.0.1:9")
    assert run.exit_code == 1
    assert run.stderr.startswith("convcli: error: --scheduler: cannot reach the Dask scheduler at tcp://127.0.0.1:9")
    assert run.stderr.count("\n") == 1 and run.stdout == ""
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- faults and interruptions
def _start(*args, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "convcli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), **kwargs)


def _wait_for(condition, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _written(folder: Path) -> list[Path]:
    return [p for p in folder.glob("*.png")] if folder.exists() else []


def _worker_pid(client, address: str) -> int | None:
    try:
        return client.run(os.getpid, workers=[address])[address]
    except Exception:  # it is already gone
        return None


def test_a_worker_killed_mid_batch_has_its_files_run_elsewhere(cluster, slow_photos, tmp_path):
    address, client = cluster
    folder, local, kernel = slow_photos
    out = tmp_path / "out"
    process = _start("filter", folder, "-o", out, "-k", kernel, *SLOW, "--scheduler", address)
    _wait_for(lambda: len(_written(out)) >= 1 or process.poll() is not None)
    busy = next(addr for addr, keys in client.processing().items() if keys)
    os.kill(_worker_pid(client, busy), signal.SIGKILL)  # a worker this fixture started; its nanny starts another
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    assert "10 done, 0 failed" in stderr
    assert _outputs(out) == _outputs(local)
    assert leftovers(tmp_path) == []
    client.wait_for_workers(2, timeout=60)


class _KillOnPoison(distributed.WorkerPlugin):
    """A worker that dies (SIGKILL, as a crash would) whenever a task for a file named poison starts on it."""

    def setup(self, worker):
        self.pid = os.getpid()

    def transition(self, key, start, finish, **kwargs):
        if finish == "executing" and "poison" in str(key):
            os.kill(self.pid, signal.SIGKILL)


def test_a_file_that_keeps_killing_workers_is_reported_and_the_rest_completes(cluster, photos, slow_photos, tmp_path):
    address, client = cluster
    small, local, _ = photos
    slow, _, kernel = slow_photos
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("p00.png", "p01.png", "grey.png"):
        (folder / name).write_bytes((small / name).read_bytes())
    (folder / "poison.png").write_bytes((slow / "p00.png").read_bytes())
    out = tmp_path / "out"
    # Each worker kills itself as the poisoned file's task starts: every try dies, however fast the file would run.
    client.register_plugin(_KillOnPoison(), name="kill-on-poison")
    try:
        process = _start("filter", folder, "-o", out, "-k", kernel, *SLOW, "--scheduler", address)
        _, stderr = process.communicate(timeout=180)
    finally:
        client.unregister_worker_plugin("kill-on-poison")
    assert process.returncode == 1, stderr
    assert _error_lines(stderr) == [f"convcli: error: {folder / 'poison.png'}: it killed the Dask worker each time "
                                    "it ran (2 times: Dask's distributed.scheduler.allowed-failures)"]
    assert sorted(_outputs(out)) == ["grey.png", "p00.png", "p01.png"]
    assert leftovers(tmp_path) == []
    client.wait_for_workers(2, timeout=60)


def test_ctrl_c_cancels_the_tasks_and_leaves_no_partial_output(cluster, slow_photos, tmp_path):
    address, client = cluster
    folder, local, kernel = slow_photos
    out = tmp_path / "out"
    process = _start("filter", folder, "-o", out, "-k", kernel, *SLOW, "--scheduler", address, start_new_session=True)
    _wait_for(lambda: len(_written(out)) >= 1 or process.poll() is not None)
    os.killpg(process.pid, signal.SIGINT)  # as a terminal's Ctrl-C: convcli's process group, not the cluster's
    sent = time.monotonic()
    _, stderr = process.communicate(timeout=60)
    assert time.monotonic() - sent < 10  # it does not wait for the files still running on the workers
    assert process.returncode in (-signal.SIGINT, 130), stderr
    assert "interrupted" in stderr and "Traceback" not in stderr

    def idle():  # the files a worker was running when the tasks were cancelled end there
        return not any(client.run(lambda dask_worker: dask_worker.state.executing_count).values())

    _wait_for(idle)
    written = _outputs(out)
    assert 0 < len(written) < 10
    assert all(written[name] == local.joinpath(name).read_bytes() for name in written)  # each one whole
    assert leftovers(tmp_path) == []


def test_small_files_share_a_task_and_a_large_one_has_its_own():
    from convcli.pipeline.cluster import GROUP_BYTES, groups

    sizes = [10] * 40 + [GROUP_BYTES, None] + [GROUP_BYTES // 2] * 3
    items = list(range(len(sizes)))
    grouped = groups(items, sizes, threads=1)
    assert [len(g) for g in grouped] == [11, 11, 11, 7, 1, 1, 2, 1]  # 45 items: 4 tasks a thread
    assert [len(g) for g in groups(items, sizes, threads=0)] == [11, 11, 11, 7, 1, 1, 2, 1]
    assert [len(g) for g in groups(items * 10, sizes * 10, threads=2)][:3] == [16, 16, 8]
    assert [len(g) for g in groups(items[:6], sizes[:6], threads=2)] == [1] * 6  # a short batch: every thread busy
    assert [i for g in grouped for i in g] == items
