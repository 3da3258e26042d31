"""convcli as a process among others: pipes that close, full disks, signals, FIFOs, links, --debug.

Every case runs the real command in a subprocess and checks the contract of
issue 8: one line on stderr, the right exit code (or death by the signal),
no partial or temporary file, inputs untouched, nothing left running.
"""
from __future__ import annotations

import os
import resource
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from conftest import convcli, convcli_process, leftovers as temporaries, session_members

CONVCLI = [sys.executable, "-m", "convcli"]


@pytest.fixture
def grey(tmp_path):
    path = tmp_path / "grey.png"
    Image.fromarray((np.arange(64 * 64).reshape(64, 64) % 251).astype(np.uint8)).save(path)
    return path


# ---------------------------------------------------------------- pipes and full disks
def test_head_closing_the_pipe_ends_the_run_quietly_with_exit_0(tmp_path):
    src = tmp_path / "big.npy"
    np.save(src, np.ones((512, 512), np.float32))  # 1 MiB out: far more than a pipe buffer
    proc = subprocess.Popen([*CONVCLI, "filter", src, "-k", "box:3", "-o", "-"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    head = proc.stdout.read(100)
    proc.stdout.close()  # what `| head -c 100` does
    code = proc.wait(timeout=30)  # it ends instead of blocking on the closed pipe
    assert len(head) == 100 and head.startswith(b"\x93NUMPY")
    assert code == 0 and proc.stderr.read() == b""


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("args", [["filter", "GREY", "-k", "box:3", "-o", "-"], ["kernels", "list"]])
def test_a_full_disk_on_stdout_is_exit_1_and_one_line(grey, args):
    args = [str(grey) if a == "GREY" else a for a in args]
    with open("/dev/full", "wb") as full:
        proc = subprocess.run([*CONVCLI, *args], stdout=full, stderr=subprocess.PIPE, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.decode().splitlines() == ["convcli: error: <stdout>: cannot write: No space left on device"] \
        or proc.stderr.decode().splitlines() == ["convcli: error: <stdout>: No space left on device"]


def test_a_write_that_runs_out_of_space_keeps_the_previous_file(tmp_path, grey):
    """A file-size limit makes the write fail like a full disk (EFBIG instead of ENOSPC)."""
    out = tmp_path / "out.npy"
    np.save(out, np.zeros(3))
    previous = out.read_bytes()

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    proc = convcli_process("filter", grey, "-k", "box:3", "-o", out, preexec_fn=small_files)
    lines = proc.stderr.decode().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith(f"convcli: error: {out}: cannot write")
    assert out.read_bytes() == previous and temporaries(tmp_path) == []


# ---------------------------------------------------------------- signals
def slow_tree(folder, count=10):
    folder.mkdir()
    rows = (np.add.outer(np.arange(256) * 3, np.arange(256) * 7) % 256).astype(np.uint8)
    for i in range(count):
        Image.fromarray(rows).save(folder / f"f{i:02d}.png", compress_level=1)
    return folder


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_mid_batch_stops_everything_and_exits_by_it(tmp_path, signum):
    src, out = slow_tree(tmp_path / "in"), tmp_path / "out"
    proc = subprocess.Popen([*CONVCLI, "filter", src, "-o", out, "-k", "gaussian:sigma=8", "--method", "direct",
                             "-j", "2"], stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not [n for n in (os.listdir(out) if out.exists() else [])
                                               if "convcli-tmp" not in n]:
        time.sleep(0.01)
    if signum == signal.SIGINT:
        os.killpg(proc.pid, signum)  # Ctrl-C reaches the whole process group
    else:
        os.kill(proc.pid, signum)  # `kill PID` reaches the parent only
    sent = time.monotonic()
    code = proc.wait(timeout=30)
    gone = time.monotonic() - sent
    stderr = proc.stderr.read().decode()
    time.sleep(0.3)
    assert code == -signum, stderr  # died by the signal: a shell loop around it stops too
    assert gone < 5.0  # workers are stopped, not waited for (each file takes seconds)
    assert "interrupted:" in stderr and "Traceback" not in stderr and "Warning" not in stderr
    assert temporaries(out) == []
    assert session_members(proc.pid) == []
    for name in os.listdir(out):  # what was kept is complete
        with Image.open(out / name) as im:
            im.load()


def cpu_ticks(pid: int) -> int:
    """User and system time a process has used so far, in clock ticks (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def _started_batch(tmp_path, count=10):
    src, out = slow_tree(tmp_path / "in", count), tmp_path / "out"
    proc = subprocess.Popen([*CONVCLI, "filter", src, "-o", out, "-k", "gaussian:sigma=8", "--method", "direct",
                             "-j", "2"], stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not [n for n in (os.listdir(out) if out.exists() else [])
                                               if "convcli-tmp" not in n]:
        time.sleep(0.01)
    return proc, out


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_a_killed_worker_costs_only_the_file_it_held(tmp_path, signum):
    """It used to end the whole batch with exit 70 (BrokenProcessPool): 13 of 16 files were never done."""
    proc, out = _started_batch(tmp_path)
    busiest = max((pid for pid in session_members(proc.pid) if pid != proc.pid), key=cpu_ticks)
    os.kill(busiest, signum)  # a worker, as the kernel's out-of-memory killer or a shutdown would
    stderr = proc.communicate(timeout=120)[1].decode()
    errors = [line for line in stderr.splitlines() if line.startswith("convcli: error:")]
    assert proc.returncode == 1, stderr
    assert len(errors) == 1 and f"the worker process was killed by {signum.name}" in errors[0], stderr
    assert "Exception ignored" not in stderr
    lost = errors[0].split("convcli: error: ", 1)[1].split(":", 1)[0]
    assert "9 done, 1 failed" in stderr and "Traceback" not in stderr
    kept = sorted(os.listdir(out))
    # The lost file's output exists only if the worker was killed between renaming it and reporting it.
    assert set(kept) - {os.path.basename(lost)} == {f"f{i:02d}.png" for i in range(10)} - {os.path.basename(lost)}
    assert temporaries(out) == []
    for name in kept:  # complete, every one
        with Image.open(out / name) as im:
            im.load()
    assert session_members(proc.pid) == []


def test_a_batch_killed_outright_leaves_no_process_behind(tmp_path):
    """SIGKILL gives the parent no chance to stop its workers: they die with it (parent-death signal)."""
    proc, out = _started_batch(tmp_path)
    assert len(session_members(proc.pid)) == 3  # the parent and its two workers, nothing else
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    deadline = time.monotonic() + 1.0
    while session_members(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert session_members(proc.pid) == []
    finished = sorted(os.listdir(out))
    time.sleep(0.5)
    assert sorted(os.listdir(out)) == finished  # nobody writes on after the parent's death


def test_fail_fast_with_workers_stops_them_quietly(tmp_path):
    """A worker stopped mid-file once printed "Exception ignored ... _Stop" (a signal raised inside a finaliser)."""
    src = slow_tree(tmp_path / "in", 8)
    (src / "f03.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    out = tmp_path / "out"
    for _ in range(2):
        proc = subprocess.Popen([*CONVCLI, "filter", src, "-o", out, "-k", "gaussian:sigma=8", "--method", "direct",
                                 "-j", "2", "--fail-fast"], stderr=subprocess.PIPE, start_new_session=True)
        stderr = proc.communicate(timeout=120)[1].decode()
        assert proc.returncode == 1 and "stopped at the first failure" in stderr, stderr
        assert [line for line in stderr.splitlines() if not line.startswith("convcli: ")] == []
        assert temporaries(out) == [] and session_members(proc.pid) == []


@pytest.mark.skipif(not shutil.which("unshare"), reason="needs unshare(1) to mount a read-only folder")
def test_a_read_only_output_folder_is_the_users_problem_not_a_bug(tmp_path):
    """Every file was reported as 'internal error: OSError: [Errno 30] Read-only file system'."""
    src, out = slow_tree(tmp_path / "in", 3), tmp_path / "out"
    out.mkdir()
    command = shlex.join([*map(str, CONVCLI), "filter", str(src), "-o", str(out / "sub"), "-k", "box:3", "-j", "2"])
    # A private mount namespace (as root, or as a user mapped to root in it) makes `out` read-only for convcli only.
    script = f"mount --bind {shlex.quote(str(out))} {shlex.quote(str(out))} && " \
             f"mount -o remount,bind,ro {shlex.quote(str(out))} || exit 99; {command}"
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=120)
    if proc.returncode == 99 or "unshare:" in proc.stderr:
        pytest.skip(f"cannot make a private read-only mount here: {proc.stderr.strip()}")
    errors = [line for line in proc.stderr.splitlines() if line.startswith("convcli: error:")]
    assert proc.returncode == 1 and len(errors) == 3, proc.stderr
    assert all(line.endswith(f"cannot create its folder {out / 'sub'}: Read-only file system") for line in errors)
    assert "internal error" not in proc.stderr and os.listdir(out) == []


# convcli run as a process, with a finaliser that runs mid-run and takes a SIGTERM: the handler's exception is
# raised inside it, where Python can only print "Exception ignored" and go on.
SWALLOWING = """
import os, signal, sys
import convcli.pipeline.chain as chain
from convcli.cli import main

class Finaliser:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(10000):  # the handler runs here, inside the finaliser
            pass

prepare = chain.prepare
def prepared(*args, **kwargs):
    Finaliser()  # dropped at once
    return prepare(*args, **kwargs)
chain.prepare = prepared
sys.exit(main())
"""


def test_a_signal_that_lands_in_a_finaliser_still_stops_the_run(tmp_path):
    """Swallowed there, it used to be lost: the run went on, wrote its output and exited 0."""
    src, out = tmp_path / "x.npy", tmp_path / "out.npy"
    np.save(src, np.ones((64, 64), np.float32))
    proc = subprocess.run([sys.executable, "-c", SWALLOWING, "filter", src, "-k", "box:3", "-o", out],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGTERM, proc.stderr
    assert "Exception ignored" not in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists() and temporaries(tmp_path) == []


def test_sigterm_during_a_single_file_write_leaves_no_temporary(tmp_path):
    src = tmp_path / "vol.npy"
    np.save(src, np.ones((160, 160, 160), np.float32))
    out = tmp_path / "out.npy"
    proc = subprocess.Popen([*CONVCLI, "filter", src, "-k", "gaussian:sigma=3", "--method", "direct", "-o", out],
                            stderr=subprocess.PIPE)
    time.sleep(1.5)
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=30)
    assert code in (-signal.SIGTERM, 0)  # 0 only if the machine was fast enough to finish first
    assert temporaries(tmp_path) == []
    assert code == 0 or not out.exists()


# ---------------------------------------------------------------- the file system
def test_output_equal_to_the_input_through_a_symlink_or_dot(tmp_path, grey, monkeypatch):
    link = tmp_path / "link.png"
    link.symlink_to(grey)
    before = grey.read_bytes()
    monkeypatch.chdir(tmp_path)
    for dest in (link, "./grey.png"):
        result = convcli("filter", str(grey), "-k", "box:3", "-o", str(dest))
        assert result.exit_code == 1 and "is the input file" in result.stderr
    assert grey.read_bytes() == before and link.is_symlink()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifos_never_hang(tmp_path, grey):
    tree = tmp_path / "in"
    tree.mkdir()
    os.replace(grey, tree / "grey.png")
    os.mkfifo(tree / "pipe.png")
    os.mkfifo(tmp_path / "kernel.txt")
    proc = convcli_process("filter", tree, "-o", tmp_path / "out", "-k", "box:3", "--verbose", timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert b"skipped" in proc.stderr and b"pipe.png" in proc.stderr
    assert os.listdir(tmp_path / "out") == ["grey.png"]
    proc = convcli_process("filter", tree / "pipe.png", "-k", "box:3", "-o", tmp_path / "x.png", timeout=30)
    assert proc.returncode == 1 and b"not a regular file" in proc.stderr
    proc = convcli_process("filter", tree / "grey.png", "-k", tmp_path / "kernel.txt", "-o", tmp_path / "x.png", timeout=30)
    assert proc.returncode == 1 and b"not a regular file" in proc.stderr
    assert stat.S_ISFIFO(os.stat(tree / "pipe.png").st_mode)


def test_batch_output_folder_that_is_or_holds_an_input_folder_is_refused(tmp_path, grey):
    tree = tmp_path / "photos"
    (tree / "raw").mkdir(parents=True)
    os.replace(grey, tree / "raw" / "a.png")
    for args, needle in (([tree, "-o", tree], "is also the input folder"),
                         ([tree / "raw", "-o", tree], "holds the input folder")):
        result = convcli("filter", *map(str, args), "-k", "box:3")
        assert result.exit_code == 2 and needle in result.stderr
    assert sorted(p.name for p in tree.rglob("*")) == ["a.png", "raw"]


def test_batch_never_writes_onto_another_input(tmp_path):
    """A mirrored output never lands on an input file; with --suffix, photo_x.png is photo.png's output.

    photo_x.png beside photo.png is what an earlier ``--suffix _x`` run made:
    it is not taken as an input again (no photo_x_x.png) and is replaced, as
    any output is (``--skip-existing`` keeps it).
    """
    tree = tmp_path / "in"
    tree.mkdir()
    for name in ("photo.png", "photo_x.png"):
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tree / name)
    before = (tree / "photo_x.png").read_bytes()
    result = convcli("filter", str(tree), "--suffix", "_x", "-k", "box:3", "-q", "--skip-existing")
    assert result.exit_code == 0 and sorted(os.listdir(tree)) == ["photo.png", "photo_x.png"]
    assert (tree / "photo_x.png").read_bytes() == before
    (tree / "sub").mkdir()
    os.replace(tree / "photo.png", tree / "sub" / "photo.png")
    result = convcli("filter", str(tree / "sub"), str(tree / "photo_x.png"), "-o", str(tree), "-k", "box:3", "-q")
    assert result.exit_code == 2 and "holds the input folder" in result.stderr


def test_fail_fast_stops_at_the_first_failure(tmp_path):
    tree = tmp_path / "in"
    tree.mkdir()
    (tree / "a_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    for i in range(6):
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tree / f"b{i}.png")
    result = convcli("filter", str(tree), "-o", str(tmp_path / "out"), "-k", "box:3", "-j", "1",
                                 "--fail-fast")
    assert result.exit_code == 1
    assert "a_broken.png" in result.stderr and "stopped at the first failure (--fail-fast), 6 not done" in result.stderr
    assert not (tmp_path / "out").exists() or os.listdir(tmp_path / "out") == []


def test_a_broken_file_with_a_media_name_is_reported_not_skipped(tmp_path):
    tree = tmp_path / "in"
    tree.mkdir()
    (tree / "empty.png").write_bytes(b"")
    (tree / "notes.txt").write_text("not media\n")
    result = convcli("filter", str(tree), "-o", str(tmp_path / "out"), "-k", "box:3", "-j", "1")
    assert result.exit_code == 1 and "empty.png: empty file" in result.stderr and "notes.txt" not in result.stderr


def test_a_250_character_name_still_gets_a_temporary_file(tmp_path, grey):
    out = tmp_path / ("x" * 250 + ".png")
    result = convcli("filter", str(grey), "-k", "box:3", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert out.exists() and temporaries(tmp_path) == []


# ---------------------------------------------------------------- --debug and unexpected errors
def test_debug_shows_the_traceback_and_the_default_is_one_line(tmp_path):
    missing = tmp_path / "missing.png"
    plain = convcli_process("filter", missing, "-k", "box:3", "-o", tmp_path / "o.png")
    assert plain.returncode == 1 and plain.stderr.decode().count("\n") == 1
    for extra, env in ((["--debug"], None), ([], dict(os.environ, CONVCLI_DEBUG="1"))):
        proc = convcli_process(*extra, "filter", missing, "-k", "box:3", "-o", tmp_path / "o.png", env=env)
        text = proc.stderr.decode()
        assert proc.returncode == 1 and "Traceback (most recent call last)" in text
        assert "DataError: no such file" in text and "locals" not in text.lower()


def test_an_unexpected_exception_is_one_line_and_exit_70(capsys):
    from convcli.cli import report

    def broken():
        raise RecursionError("maximum recursion depth exceeded")

    assert report.exit_code_of(broken) == 70
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error: RecursionError" in err and "--debug" in err


def test_debug_in_one_run_does_not_leak_into_the_next(tmp_path):
    args = ["filter", str(tmp_path / "missing.png"), "-k", "box:3", "-o", str(tmp_path / "o.png")]
    debugged = convcli("--debug", *args)  # the traceback, and the error's own exit code
    assert debugged.exit_code == 1 and "Traceback" in debugged.stderr and "DataError" in debugged.stderr
    result = convcli(*args)
    assert result.exit_code == 1 and result.stderr.count("\n") == 1


def test_closed_standard_descriptors(tmp_path, grey):
    """`>&-` and `2>&-`: a lost write is an error, and no file ever takes descriptor 1 or 2."""
    proc = convcli_process("kernels", "list", preexec_fn=lambda: os.close(1))
    assert proc.returncode == 1 and proc.stderr.decode() == "convcli: error: <stdout>: standard output is closed\n"
    proc = convcli_process("filter", grey, "-k", "box:3", "-o", "-", preexec_fn=lambda: os.close(1))
    assert proc.returncode == 1 and b"standard output is closed" in proc.stderr
    import soundfile as sf

    wav, out = tmp_path / "loud.wav", tmp_path / "out.wav"
    sf.write(wav, np.full(800, 0.9), 8000, subtype="PCM_16")
    proc = convcli_process("filter", wav, "-k", "[1,1,1]", "-o", out, preexec_fn=lambda: os.close(2))  # warns: clipped
    assert proc.returncode == 0
    data, rate = sf.read(out, dtype="int16")
    assert rate == 8000 and data.shape == (800,) and (data == 32767).all()


def test_an_output_that_is_a_device_or_fifo_is_written_into_never_replaced(tmp_path, grey):
    if os.geteuid() == 0:  # our own null device, so a regression cannot replace the system's
        device = tmp_path / "null"
        os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    else:
        device = "/dev/null"
    proc = convcli_process("filter", grey, "-k", "box:3", "--format", "png", "-o", device)
    assert proc.returncode == 0, proc.stderr
    assert stat.S_ISCHR(os.stat(device).st_mode) and temporaries(tmp_path) == []
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    started = time.monotonic()
    proc = convcli_process("filter", grey, "-k", "box:3", "-o", fifo, timeout=30)  # nobody reads: refused, not hung
    assert proc.returncode == 1 and b"nobody reads" in proc.stderr and time.monotonic() - started < 10
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE)
    time.sleep(0.2)
    proc = convcli_process("filter", grey, "-k", "box:3", "-o", fifo, timeout=30)
    assert proc.returncode == 0 and reader.communicate(timeout=30)[0].startswith(b"\x89PNG")
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
