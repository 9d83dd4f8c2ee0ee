"""README's figures are the committed outputs' figures: the table of the two jobs quotes `results/main_job.json`
(written by `make figures`, docs/figures.py), and the architecture figure it shows exists.

Catches: a README number typed in or left stale after `make figures` reran (planted: README's FVE changed by
0.001 -> fails naming the cell), a figure README names that is not committed."""
import json, re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
# README column -> (job key in results/main_job.json, how README prints it)
COLUMNS = {"FVE": ("fve", "{:.3f}"), "CE loss recovered": ("ce_loss_recovered", "{:.3f}"), "delta CE": ("delta_ce", "{:.3f}"),
           "feature recovery": ("feature_recovery", "{:.3f}"), "routing purity": ("routing_purity", "{:.3f}"),
           "L0": ("l0", "{:.0f}"), "max expert load x E": ("max_load_x_E", "{:.2f}"), "training s": ("seconds", "{:.0f}"),
           "dead, held-out": ("dead_frac", "{:.1%}"), "dead, training": ("dead_frac_train", "{:.1%}")}


def jobs_table(text: str) -> tuple:
    "The header and rows of README's table whose first column is `job`."
    lines = text.splitlines()
    i = next(i for i, l in enumerate(lines) if re.match(r"\|\s*job\s*\|", l))
    cells = lambda l: [c.strip() for c in l.strip().strip("|").split("|")]
    rows = []
    for l in lines[i + 2:]:
        if not l.startswith("|"): break
        rows.append(cells(l))
    return cells(lines[i]), rows


def mismatches(text: str, res: dict) -> list:
    header, rows = jobs_table(text)
    bad = []
    for row in rows:
        job = re.search(r"`switch-sae train([^`]*)`", row[0])
        name = "synthetic" if job and "--data synthetic" in job.group(1) else "main"
        got = res["jobs"][name]
        for col, cell in zip(header[1:], row[1:]):
            key, fmt = COLUMNS[col]
            want = fmt.format(got[key]) if key in got else "-"
            if cell != want: bad.append(f"{name} job, {col}: README {cell!r}, results/main_job.json {want!r}")
    return bad


def test_readme_quotes_the_committed_jobs():
    res = json.loads((ROOT / "results" / "main_job.json").read_text())
    assert not mismatches(README, res), "README's job table differs from results/main_job.json (make figures, then copy):\n" + \
        "\n".join(mismatches(README, res))
    assert res["machine"] in README and res["date"] in README, "README must name the machine and the date of results/main_job.json"


def test_the_check_sees_a_stale_number():
    res = json.loads((ROOT / "results" / "main_job.json").read_text())
    fve = "{:.3f}".format(res["jobs"]["main"]["fve"])
    stale = README.replace(f"| {fve} |", "| {:.3f} |".format(float(fve) + 0.001), 1)
    assert any("FVE" in m for m in mismatches(stale, res))


def test_readme_images_are_committed():
    for ref in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", README):
        assert (ROOT / ref).exists(), f"README shows {ref}, which is not in the repository"


# A guide, README or a results folder's README quotes a committed file between `<!-- quote: PATH -->` and
# `<!-- end quote -->` (a results table written by `plot_sweep`): the quote must be the file, byte for byte, so a
# rerun that changes the file shows here.
sys.path.insert(0, str(ROOT / "docs"))
import quotes  # noqa: E402  (docs/quotes.py: the quote markers, the documents that may hold them, the refresh)


def stale_quotes(text: str) -> list:
    bad = []
    for path, body in quotes.quoted(text):
        f = ROOT / path
        if not f.exists(): bad.append(f"{path}: quoted but not committed")
        elif f.read_text() != body: bad.append(f"{path}: the quote differs from the committed file (python docs/quotes.py)")
    return bad


def test_quoted_results_are_the_committed_files():
    docs = quotes.documents()
    assert any(quotes.quoted(d.read_text()) for d in docs), "no guide quotes a results table any more: keep the check or drop it"
    bad = [f"{d.relative_to(ROOT)}: {m}" for d in docs for m in stale_quotes(d.read_text())]
    assert not bad, "\n".join(bad)


def test_the_quote_check_sees_a_stale_table():
    text = next(d.read_text() for d in sorted((ROOT / "docs" / "guides").glob("*.md")) if quotes.quoted(d.read_text()))
    path, body = quotes.quoted(text)[0]
    line = next(l for l in body.splitlines() if re.search(r"\d\.\d{3}", l))
    stale = text.replace(line, re.sub(r"(\d\.\d{3})", lambda m: f"{float(m.group(1)) + 0.001:.3f}", line, count=1), 1)
    assert stale_quotes(stale) == [f"{path}: the quote differs from the committed file (python docs/quotes.py)"]
