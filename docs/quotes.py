"""Refresh the results a guide or README quotes: every block between `<!-- quote: PATH -->` and `<!-- end quote -->`
in README.md, docs/guides/*.md and results/*/README.md becomes the committed file PATH again (tests/test_readme_figures.py checks them).

    python docs/quotes.py
"""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUOTE = re.compile(r"(<!-- quote: (\S+) -->\n)(.*?)(<!-- end quote -->)", re.S)


def documents() -> list:
    "The files that may quote a committed file: README.md, the guides, each results folder's README."
    return [ROOT / "README.md", *sorted((ROOT / "docs" / "guides").glob("*.md")), *sorted((ROOT / "results").glob("*/README.md"))]


def quoted(text: str) -> list:
    "(path, quoted text) of each quote in `text`."
    return [(m.group(2), m.group(3)) for m in QUOTE.finditer(text)]


def refresh(text: str) -> str:
    return QUOTE.sub(lambda m: m.group(1) + (ROOT / m.group(2)).read_text() + m.group(4), text)


if __name__ == "__main__":
    for doc in documents():
        text = doc.read_text()
        if refresh(text) != text:
            doc.write_text(refresh(text)); print(f"refreshed the quotes of {doc.relative_to(ROOT)}")
