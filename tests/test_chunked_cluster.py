"""A chunked Zarr run sent to a real Dask distributed cluster on 127.0.0.1: the same result as on this machine.

The fixture starts a scheduler and two worker processes (each one thread)
bound to 127.0.0.1 and stops them after the module.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

zarr = pytest.importorskip("zarr")
distributed = pytest.importorskip("distributed")

from conftest import convcli  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None, silence_logs=50) as running:
        with distributed.Client(running) as client:
            yield running.scheduler_address, client


@pytest.fixture(scope="module")
def volume(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cluster")
    data = np.random.default_rng(5).standard_normal((48, 40, 64)).astype(np.float32)
    array = zarr.create_array(str(folder / "v.zarr"), shape=data.shape, chunks=(8, 20, 32), dtype="f4")
    array[...] = data
    local = folder / "local.zarr"
    run = convcli("filter", str(folder / "v.zarr"), "-k", "gaussian:sigma=1.5", "--stride", "2", "-o", str(local),
                  "--memory-budget", "2M")
    assert run.exit_code == 0, run.stderr
    return folder, zarr.open_array(str(local), mode="r")[...]


def test_the_cluster_computes_what_this_machine_does_bit_for_bit(cluster, volume):
    address, _ = cluster
    folder, local = volume
    dest = folder / "remote.zarr"
    run = convcli("filter", str(folder / "v.zarr"), "-k", "gaussian:sigma=1.5", "--stride", "2", "-o", str(dest),
                  "--memory-budget", "2M", "--scheduler", address)
    assert run.exit_code == 0, run.stderr
    assert np.array_equal(zarr.open_array(str(dest), mode="r")[...], local)


def test_a_worker_killed_mid_run_has_its_tasks_run_elsewhere(cluster, volume):
    address, client = cluster
    folder, local = volume
    dest, partial = folder / "killed.zarr", folder / "killed.zarr.partial"
    process = subprocess.Popen(
        [sys.executable, "-m", "convcli", "filter", str(folder / "v.zarr"), "-k", "gaussian:sigma=1.5", "--stride",
         "2", "-o", str(dest), "--memory-budget", "2M"], stderr=subprocess.PIPE,
        env=dict(os.environ, DASK_SCHEDULER_ADDRESS=address))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (partial / "c").exists():
        time.sleep(0.01)
    victim = next(iter(client.run(os.getpid).values()))
    os.kill(victim, signal.SIGKILL)  # a worker process this fixture started; its nanny starts another
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    assert np.array_equal(zarr.open_array(str(dest), mode="r")[...], local)


def test_an_unreachable_scheduler_is_one_line(tmp_path):
    array = zarr.create_array(str(tmp_path / "v.zarr"), shape=(4, 4), chunks=(2, 2), dtype="f4")
    array[...] = 1
    run = convcli("filter", str(tmp_path / "v.zarr"), "-k", "box:3", "-o", str(tmp_path / "o.zarr"),
                  "--scheduler", "tcp://127.0.0.1:9")
    assert run.exit_code == 1
    assert run.stderr.startswith("convcli: error: --scheduler: cannot reach the Dask scheduler at tcp://127.0.0.1:9")
    assert run.stderr.count("\n") == 1
    assert not (tmp_path / "o.zarr").exists()


def test_a_scheduler_for_an_input_that_is_not_chunked_is_refused(tmp_path):
    np.save(tmp_path / "a.npy", np.ones((4, 4), np.float32))
    run = convcli("filter", str(tmp_path / "a.npy"), "-k", "box:3", "-o", str(tmp_path / "o.npy"),
                  "--scheduler", "tcp://127.0.0.1:9", env={"DASK_SCHEDULER_ADDRESS": ""})
    assert run.exit_code == 2 and run.stderr.startswith("convcli: error: --scheduler: runs the chunks of a Zarr")
