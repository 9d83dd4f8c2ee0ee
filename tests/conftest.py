import os, sys
import pytest

# The tests run on the CPU in CI; a GPU, when present, is used only by tests marked for it.
os.environ.setdefault("CUDA_VISIBLE_DEVICES", os.environ.get("SWITCH_SAE_TEST_CUDA", ""))


def run_cli(*args, cwd=None, check=True, timeout=600):
    "Run the installed `switch-sae` console script in a subprocess, as a user would."
    import subprocess
    exe = os.path.join(os.path.dirname(sys.executable), "switch-sae")
    p = subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"switch-sae {' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


@pytest.fixture
def cli():
    return run_cli
