"""The legacy-checkpoint writer kept with the nn fixtures, loaded once for every nn test."""
import importlib.util
import sys
from pathlib import Path


def _load():
    path = Path(__file__).parent / "fixtures" / "nn" / "legacy_torch.py"
    spec = importlib.util.spec_from_file_location("nn_legacy_torch", path)
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


lt = _load()
