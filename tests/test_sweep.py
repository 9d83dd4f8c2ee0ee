"`switch-sae sweep` from the command line: redrawing from a CSV, and its errors."
import shutil
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
FULL = ROOT / "results" / "tiny_lm_sweep"


@pytest.mark.skipif(not (FULL / "sweep.csv").exists(), reason="no committed full-grid CSV")
def test_plot_only_redraws_the_committed_figures(cli, tmp_path):
    shutil.copy(FULL / "sweep.csv", tmp_path / "sweep.csv")
    p = cli("sweep", "--plot-only", "--out", str(tmp_path))
    assert "- width:" in p.stdout and "- flop:" in p.stdout
    assert (tmp_path / "verdicts.md").read_text() == (FULL / "verdicts.md").read_text()
    assert sorted(f.name for f in tmp_path.glob("*.png")) == sorted(f.name for f in FULL.glob("*.png"))


def test_sweep_errors(cli, tmp_path):
    p = cli("sweep", "--plot-only", "--out", str(tmp_path / "none"), check=False)
    assert p.returncode != 0 and "no sweep.csv" in p.stderr and "Traceback" not in p.stderr
    p = cli("sweep", "--grid", "huge", check=False)
    assert p.returncode != 0 and "invalid choice: 'huge'" in p.stderr
    assert "sweep" in cli("--help").stdout
