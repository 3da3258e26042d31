"""Nanoseconds per unit of work of every strategy (see :mod:`.costs`), fitted by ``python bench/fit_costs.py``.

Rewritten by that script; the first values were read off the previous hand-fitted model.  Then,
from ``python bench/fit_costs.py --cases 40 --measurements FILE`` on a machine at load 13-15 (other
jobs on both cores; a per-unit refit was worse than this table there, so it was not written): the
running sums (box.*) cost 3 times the first values against the other strategies (each measured box
ran 3-30 times its estimate, the others 1.5-6 times), and an FFT call 0.3 ms, not 0.1 (a 16^3
volume's transform: milliseconds): worst regret on those 40 cases 1.86 instead of 12.2.
OpenCV's DFT (filter2D from 130 taps) at 0.7 of the first values: a random 31x31 on 1080p RGB float32
takes it 192 ms against scipy.fft's 292 (the same 40 cases unchanged).
"""

NS = {
    "import.cv2": 2.5e7, "import.scipy_fft": 3.0e7,
    "direct.call": 3.0e4, "direct.tap": 1500.0, "direct.weight": 450.0, "direct.mac32": 0.6, "direct.mac64": 1.2, "direct.strided_mac": 0.3, "direct.loop": 10.0,
    "direct.gather32": 1.0, "direct.gather64": 2.0,
    "separable.call": 4.0e4, "separable.tap": 1500.0, "separable.mac32": 0.6, "separable.mac64": 1.2,
    "separable.pass32": 0.5, "separable.pass64": 1.0, "separable.gather32": 1.0, "separable.gather64": 2.0,
    "lowrank.call": 4.0e4, "lowrank.tap": 1500.0, "lowrank.mac32": 0.6, "lowrank.mac64": 1.2,
    "lowrank.pass32": 0.5, "lowrank.pass64": 1.0, "lowrank.gather32": 1.0, "lowrank.gather64": 2.0,
    "box.call": 90000, "box.band": 9000, "box.sum": 3.75, "box.out32": 3, "box.out64": 4.5,
    "toeplitz.call": 5.0e4, "toeplitz.matrix": 200.0, "toeplitz.mac32": 0.017, "toeplitz.mac64": 0.034,
    "toeplitz.gather32": 2.4, "toeplitz.gather64": 3.0, "toeplitz.band": 5000.0,
    "fft.call": 3.0e5, "fft.point32": 0.65, "fft.point64": 1.0, "fft.copy32": 1.0,
    "fft.copy64": 2.0,
    "fft1.call": 1.0e5, "fft1.block": 3000.0, "fft1.group": 2.0e4, "fft1.point32": 0.4,
    "fft1.point64": 0.6, "fft1.out32": 1.0, "fft1.out64": 1.5,
    "opencv.call": 2.0e4, "opencv.calls": 2.0e4, "opencv.copy32": 1.0, "opencv.copy64": 2.0,
    "opencv.filter32": 0.047, "opencv.filter64": 0.1, "opencv.filterint": 0.05, "opencv.out32": 1.2,
    "opencv.out64": 2.0, "opencv.outint": 1.2, "opencv.sep32": 0.047, "opencv.sep64": 0.1, "opencv.sepint": 0.05,
    "opencv.box32": 2.4, "opencv.box64": 4.0, "opencv.boxint": 2.4, "opencv.box_bands32": 1.2,
    "opencv.box_bands64": 2.0, "opencv.box_bandsint": 1.2, "opencv.dft32": 0.7, "opencv.dft64": 1.05,
    "opencv.dftint": 0.7,
    "planes.call": 2.0e4, "planes.calls": 1500.0, "planes.convert32": 1.0,
    "planes.convert64": 2.0, "planes.sepmac32": 0.047, "planes.sepmac64": 0.1, "planes.out32": 1.0,
    "planes.out64": 2.0, "planes.pass32": 0.3, "planes.pass64": 0.6, "planes.filter32": 0.1, "planes.filter64": 0.2,
    "planes.tap32": 0.025, "planes.tap64": 0.05, "planes.dft32": 0.7, "planes.dft64": 1.05,
}
