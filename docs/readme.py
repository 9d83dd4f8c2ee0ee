"""README.md is made from nbs/index.ipynb (settings.ini `readme_nb`), the website's home page.

    python docs/readme.py            # write README.md from nbs/index.ipynb
    python docs/readme.py --check    # fail, with a diff, when README.md is not what index.ipynb gives
    python docs/readme.py --from-readme   # the other way: make nbs/index.ipynb from README.md

nbdev's own `nbdev_readme` renders the notebook with Quarto, which this project does not use (see
README, "The website"). The rendering here is plain: markdown cells as they are, code cells as
```python blocks followed by their text output when the executed copy has one, cells joined by a
blank line. `--from-readme` splits README.md at its `## ` headings, one markdown cell each, so
that an edit made to the README can be carried into the notebook in one step.
"""
from __future__ import annotations
import argparse, difflib, json, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INDEX, README = ROOT / "nbs" / "index.ipynb", ROOT / "README.md"


def _src(cell) -> str:
    s = cell["source"]
    return s if isinstance(s, str) else "".join(s)


def render(nb: dict) -> str:
    "README text of the notebook `nb`: markdown as is, code in ```python fences, directives and hidden cells left out."
    parts = []
    for c in nb["cells"]:
        src = _src(c)
        if c["cell_type"] == "markdown":
            parts.append(src.rstrip("\n"))
        elif c["cell_type"] == "code":
            lines = src.splitlines()
            if any(l.strip() in ("#| hide", "#|hide") for l in lines) or any(l.startswith("#| default_exp") for l in lines): continue
            code = "\n".join(l for l in lines if not l.startswith("#|")).strip("\n")
            if code: parts.append(f"```python\n{code}\n```")
            text = "".join("".join(o.get("text", "")) if o.get("output_type") == "stream" else
                           "".join(o.get("data", {}).get("text/plain", "")) for o in c.get("outputs", []))
            if text.strip(): parts.append(f"```\n{text.rstrip()}\n```")
    return "\n\n".join(parts) + "\n"


def from_readme(text: str) -> dict:
    "A notebook of markdown cells, one per `## ` section of `text`; `render` gives `text` back."
    chunks, cur = [], []
    for line in text.rstrip("\n").split("\n"):
        if line.startswith("## ") and cur:
            chunks.append("\n".join(cur)); cur = []
        cur.append(line)
    chunks.append("\n".join(cur))
    cells = [{"cell_type": "markdown", "id": f"readme{i:02d}", "metadata": {},
              "source": [l + "\n" for l in ch.rstrip("\n").split("\n")[:-1]] + [ch.rstrip("\n").split("\n")[-1]]}
             for i, ch in enumerate(chunks)]
    return {"cells": cells, "metadata": {"kernelspec": {"display_name": "python3", "language": "python", "name": "python3"}},
            "nbformat": 4, "nbformat_minor": 5}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="README.md from nbs/index.ipynb")
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--from-readme", action="store_true")
    a = ap.parse_args(argv)
    if a.from_readme:
        nb = from_readme(README.read_text())
        if render(nb) != README.read_text():
            print("warning: README.md does not survive the round trip exactly (blank lines before a ## heading?)", file=sys.stderr)
        INDEX.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
        print(f"wrote {INDEX.relative_to(ROOT)} ({len(nb['cells'])} cells) from README.md")
        return 0
    if not INDEX.exists():
        print(f"{INDEX.relative_to(ROOT)} is missing: make it with python docs/readme.py --from-readme", file=sys.stderr)
        return 1
    want = render(json.loads(INDEX.read_text()))
    if a.check:
        have = README.read_text() if README.exists() else ""
        if have == want:
            print("README.md is in step with nbs/index.ipynb"); return 0
        diff = "".join(difflib.unified_diff(have.splitlines(True), want.splitlines(True), "README.md", "from nbs/index.ipynb", n=1))
        print("README.md is not what nbs/index.ipynb gives: edit the notebook, then run `make readme`. "
              "(An edit made to README.md instead: carry it over with `python docs/readme.py --from-readme`.)\n" + diff[:6000],
              file=sys.stderr)
        return 1
    README.write_text(want)
    print(f"wrote README.md from {INDEX.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
