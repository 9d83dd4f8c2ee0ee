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


def pytest_terminal_summary(terminalreporter):
    "Print the fault-injection counts (tests/test_faults.py) after the run."
    mod = sys.modules.get("test_faults") or sys.modules.get("tests.test_faults")
    if mod is None: return
    c = mod.COUNTS
    if any(c.values()):
        terminalreporter.write_line(
            f"fault injection: kills survived {c['kills_survived']}, damaged checkpoints recovered "
            f"{c['checkpoints_damaged']}, full-disk runs {c['disk_full_runs']}, runs that lost data {c['runs_that_lost_data']}")
