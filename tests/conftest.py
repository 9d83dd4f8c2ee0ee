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


BAD_INPUTS = dict(tried=0, refused=0)
BAD_INPUT_FILES = ("test_bad_input.py::", "test_cli.py::test_bad_config_is_refused_before_work")


def pytest_runtest_logreport(report):
    "Count the bad-input cases (each a parametrized case or test of tests/test_bad_input.py, and the CLI's bad flags)."
    if report.when == "call" and any(f in report.nodeid for f in BAD_INPUT_FILES):
        BAD_INPUTS["tried"] += 1
        BAD_INPUTS["refused"] += report.passed


def pytest_terminal_summary(terminalreporter):
    "Print the fault-injection counts (tests/test_faults.py) and the bad inputs tried after the run."
    mod = sys.modules.get("test_faults") or sys.modules.get("tests.test_faults")
    c = mod.COUNTS if mod is not None else {}
    if any(c.values()):
        terminalreporter.write_line(
            f"fault injection: kills survived {c['kills_survived']}, damaged checkpoints recovered "
            f"{c['checkpoints_damaged']}, full-disk runs {c['disk_full_runs']}, runs that lost data {c['runs_that_lost_data']}")
    if BAD_INPUTS["tried"]:
        terminalreporter.write_line(
            f"bad inputs: {BAD_INPUTS['tried']} cases tried, {BAD_INPUTS['refused']} refused with a clear error, "
            f"{BAD_INPUTS['tried'] - BAD_INPUTS['refused']} not")


def headless_chromium(tmp, chromium: str, chromedriver: str, window: str = "1400,1800", network_log: bool = False):
    """A Selenium driver for Debian's Chromium, headless, with no network chatter (the browser tests share it);
    `network_log` records Chromium's performance log, every request it made included."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    os.environ.setdefault("SE_AVOID_STATS", "true")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--disable-dev-shm-usage", f"--window-size={window}", f"--user-data-dir={tmp / 'chromium-profile'}"):
        opts.add_argument(a)
    if network_log: opts.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    return webdriver.Chrome(service=Service(chromedriver, log_output=str(tmp / "chromedriver.log")), options=opts)
