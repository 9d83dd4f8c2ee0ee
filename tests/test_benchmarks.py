"""Every script in `benchmarks/` (and every `python <script>` that README.md or docs/guides/ names) runs, on tiny
arguments, in a subprocess: a rename in the library breaks `make test`, not the documentation. Nothing here is timed.

Planted once (2026-12-06): `from switch_sae.train import _stream_state` back in `benchmarks/resume_stream.py` (the
ImportError README's command hit) fails `test_benchmark_script_runs[benchmarks/resume_stream.py]`."""
import os, re, shutil, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
# script -> the tiny arguments it runs with here (each a few seconds on one CPU thread), and what its output must hold
TINY = {
    "benchmarks/resume_stream.py": (["3", "--n-ctxs", "8", "--batch-size", "64"], "same next batch: True"),
    "benchmarks/auxk_cost.py": (["--repeats", "1", "--steps", "1"], "Switch E=16, N = 16384"),
    "benchmarks/flop_matched_lr.py": (["--steps", "2", "--threads", "1", "--eval-tokens", "256", "--n-ctxs", "16"], "Switch E=16"),
    # run from a copy in a temporary folder, so that the image it draws is written there, not over the committed one
    "docs/figures.py": (["--only", "image"], "wrote docs/images/switch_sae.png"),
    "results/tiny_lm_lb2/why_bias.py": (["--steps", "4", "--batch-size", "64", "--eval-tokens", "256", "--n-ctxs", "16",
                                         "--out", "why_bias.md"], "| bias (bias_rate 1e-3, lb_alpha 0) |"),
}
ELSEWHERE = {"results/figures.py": "test_figures_command_writes_its_table"}


def test_every_benchmark_script_has_tiny_arguments():
    "A new script in benchmarks/ must be added to TINY, so that it runs here too."
    assert sorted(p.name for p in (ROOT / "benchmarks").glob("*.py")) == sorted(Path(s).name for s in TINY if s.startswith("benchmarks/"))


def test_every_script_readme_names_is_run_here():
    "Each `python <path>.py` command in README.md and docs/guides/ names a file of this repository that this file runs."
    docs = [ROOT / "README.md", *sorted((ROOT / "docs" / "guides").glob("*.md"))]
    named = {path: d.name for d in docs for path in re.findall(r"python3? ((?:[\w.-]+/)*[\w.-]+\.py)", d.read_text())}
    assert named, "no command found: has the pattern gone stale?"
    for path, doc in named.items():
        assert (ROOT / path).exists(), f"{doc} names {path}, which does not exist"
        assert path in TINY or path in ELSEWHERE, f"{doc} names {path}: run it in this file (add it to TINY)"


@pytest.mark.parametrize("script", sorted(TINY))
def test_benchmark_script_runs(script, tmp_path):
    args, expect = TINY[script]
    path = ROOT / script
    if script.startswith("docs/"):
        (tmp_path / "docs").mkdir(); path = Path(shutil.copy(path, tmp_path / script))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, str(path), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    assert expect in p.stdout, p.stdout


def test_figures_command_writes_its_table(tmp_path):
    "`make figures` (results/figures.py), on its cheapest figure: the table names the machine, the date and the command."
    out = tmp_path / "figures.md"
    p = subprocess.run([sys.executable, str(ROOT / "results" / "figures.py"), "--only", "reproduction verdicts", "--out", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    text = out.read_text()
    assert "Machine:" in text and " UTC" in text and "| reproduction verdicts | `pytest -s tests/test_sweep.py" in text
    assert "flop-matched: Switch's MSE lower in 8 of 8 pairs" in text
