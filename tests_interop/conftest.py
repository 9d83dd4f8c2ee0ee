"""The SAELens / SAEBench interop tests. They run in the environment that `make test-interop` (part of `make test`)
builds in .venv-saelens: sae-lens and sae-bench need transformer-lens 3.x, numpy<2 and datasets<4, which the
default environment (transformer-lens 4) cannot hold. Elsewhere they skip, saying so; in CI they never skip."""
import os, subprocess, sys
from pathlib import Path
import pytest

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
ROOT = Path(__file__).resolve().parents[1]

try:
    import sae_lens  # noqa: F401
    MISSING = None
except ImportError as e:
    MISSING = (f"sae_lens is not importable in {sys.prefix} ({e}); these tests need the SAELens environment: "
               f"`make test-interop` builds .venv-saelens and runs them there")
    if os.environ.get("CI"):
        raise RuntimeError(f"CI must run the interop tests, not skip them: {MISSING}")


def pytest_collection_modifyitems(config, items):
    if MISSING:
        for item in items: item.add_marker(pytest.mark.skip(reason=MISSING))


def run_cli(*args, check=True, timeout=600):
    "The environment's `switch-sae` console script, in a subprocess, as a user runs it."
    exe = os.path.join(os.path.dirname(sys.executable), "switch-sae")
    p = subprocess.run([exe, *map(str, args)], capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"switch-sae {' '.join(map(str, args))} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


@pytest.fixture
def cli():
    return run_cli
