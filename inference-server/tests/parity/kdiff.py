"""Loads k-diffusion 0.1.1.post1's `sampling.py` and `external.py` from the PyPI package
(installed with --no-deps) without its package `__init__`, which imports training-only
dependencies; `utils.append_dims` is the one helper those two modules need."""

import importlib
import importlib.util
import sys
import types


def load_k_diffusion():
    """Returns the `(sampling, external)` modules."""
    spec = importlib.util.find_spec("k_diffusion")
    pkg = types.ModuleType("k_diffusion")
    pkg.__path__ = list(spec.submodule_search_locations)
    utils = types.ModuleType("k_diffusion.utils")
    utils.append_dims = lambda x, n: x[(...,) + (None,) * (n - x.ndim)]
    pkg.utils = utils
    sys.modules["k_diffusion"] = pkg
    sys.modules["k_diffusion.utils"] = utils
    return importlib.import_module("k_diffusion.sampling"), importlib.import_module("k_diffusion.external")
