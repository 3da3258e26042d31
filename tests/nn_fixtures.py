"""Helpers kept with the nn fixtures for every nn test: the legacy-checkpoint writer, the network by its
definition, and layers run alone."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np

from convcli.nn.efficientnet import Config, block_rows


def _load():
    path = Path(__file__).parent / "fixtures" / "nn" / "legacy_torch.py"
    spec = importlib.util.spec_from_file_location("nn_legacy_torch", path)
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


lt = _load()


def same_padding(n: int, k: int, s: int) -> tuple[int, int, int]:
    """TensorFlow's SAME rule, from its documentation: output, pad before, pad after."""
    out = -(-n // s)
    total = max((out - 1) * s + k - n, 0)
    return out, total // 2, total - total // 2


def literal_conv(x: np.ndarray, w: np.ndarray, stride: int, groups: int = 1) -> np.ndarray:
    """Grouped 2-D cross-correlation of one image ``(C, H, W)`` by its definition, in float64."""
    c, h, wd = x.shape
    o, per_group, k, _ = w.shape
    oh, top, bottom = same_padding(h, k, stride)
    ow, left, right = same_padding(wd, k, stride)
    xp = np.zeros((c, h + top + bottom, wd + left + right))
    xp[:, top:top + h, left:left + wd] = x
    out = np.zeros((o, oh, ow))
    outs_per_group = o // groups
    for oc in range(o):
        g = oc // outs_per_group
        for i in range(oh):
            for j in range(ow):
                patch = xp[g * per_group:(g + 1) * per_group, i * stride:i * stride + k, j * stride:j * stride + k]
                out[oc, i, j] = np.sum(patch * w[oc])
    return out


def literal_network(state: dict, config: Config, x: np.ndarray) -> np.ndarray:
    """The reference forward pass of one image: unfolded batch norm, literal convolutions, float64."""
    s = {k: v.astype(np.float64) for k, v in state.items()}

    def bn(h, name):
        g, b, m, v = (s[f"{name}.{p}"][:, None, None] for p in ("weight", "bias", "running_mean", "running_var"))
        return (h - m) / np.sqrt(v + config.bn_epsilon) * g + b

    def relu6(h):
        return np.minimum(np.maximum(h, 0), 6)

    h = relu6(bn(literal_conv(x, s["_conv_stem.weight"], 2), "_bn0"))
    for row in block_rows(config):
        p = f"_blocks.{row.index}"
        inp = h
        if row.expand != 1:
            h = relu6(bn(literal_conv(h, s[f"{p}._expand_conv.weight"], 1), f"{p}._bn0"))
        h = relu6(bn(literal_conv(h, s[f"{p}._depthwise_conv.weight"], row.stride, groups=row.hidden), f"{p}._bn1"))
        h = bn(literal_conv(h, s[f"{p}._project_conv.weight"], 1), f"{p}._bn2")
        if row.stride == 1 and row.inputs == row.outputs:
            h = h + inp
    h = relu6(bn(literal_conv(h, s["_conv_head.weight"], 1), "_bn1"))
    return s["_fc.weight"] @ h.mean(axis=(1, 2)) + s["_fc.bias"]


def run_bound(bind, inputs, out_shape):
    """What a bound layer computes from each of ``inputs``: its steps bound once, as a compiled pass binds them.

    ``bind(workspace, x, out)`` binds the layer from the buffer ``x`` into
    ``out``.  The inputs go through the same buffers one after another, so
    every result also shows that the steps compute what the buffers hold at
    each run.  Returns one output per input.
    """
    from convcli.nn.layers import bind_sized, run_steps

    x = np.empty(np.shape(inputs[0]), np.float32)
    out = np.full(out_shape, np.nan, np.float32)
    steps = bind_sized(lambda workspace: bind(workspace, x, out))
    results = []
    for value in inputs:
        np.copyto(x, value)
        run_steps(steps)
        results.append(out.copy())
    return results
