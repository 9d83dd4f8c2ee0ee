"""Build the website from the notebooks, offline: `make docs` (or `python docs/build.py`).

1. Run the notebooks whose executed copy is missing or stale (`docs/execute.py`, the same run as
   `make test`'s notebook step, which leaves its copies in `_proc/executed/`; after `make test`
   nothing is run again).
2. Lay out the site's sources in `_proc/site/`: each executed notebook, with nbdev's directives
   applied (`#| hide` cells left out, `#|` lines removed), an "Open in Colab" link under its title
   and a note on each cell that was not run; the reading order and the API reference, generated
   (the API from the library's docstrings, as `show_doc` shows them). The navigation and the reading
   order group the notebooks as README does: the core story, further chapters, infrastructure a
   learner can skip (`group_of`), the course.
3. `mkdocs build` (MkDocs, the Material theme, mkdocs-jupyter to render the notebooks, the
   theme's own search) writes the static site to `_docs/` (settings.ini `doc_path`).
4. The formulas are typeset offline: MathJax comes from the `jupyter-server-mathjax` package (PyPI,
   a dev requirement) and is copied into the site; every page loads it by a relative path, so the
   site loads no script and no style sheet from another host (tests/test_site.py checks it).

Open `_docs/index.html`, or serve it: `python -m http.server -d _docs`.
"""
from __future__ import annotations
import argparse, html, importlib, inspect, json, os, re, shutil, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs"))
import execute  # noqa: E402

SRC = ROOT / "_proc" / "site"
NBS = ROOT / "nbs"


def config() -> dict:
    from nbdev.config import get_config
    c = get_config()
    return dict(user=c.user, repo=c.repo, branch=c.branch, git_url=c.git_url, title=c.title, description=c.description,
                doc_path=ROOT / c.doc_path, site_url=f"{c.doc_host}{c.doc_baseurl}/")


# ---------- notebooks

def _src(cell) -> str:
    s = cell.get("source", "")
    return s if isinstance(s, str) else "".join(s)


def _lines(s: str) -> list:
    ls = s.split("\n")
    return [l + "\n" for l in ls[:-1]] + ([ls[-1]] if ls[-1] else [])


def _directives(src: str) -> dict:
    "nbdev's `#| name value` lines at the top of a code cell, as {name: value}."
    d = {}
    for line in src.splitlines():
        if not line.strip(): continue
        m = re.match(r"\s*#\s*\|\s*([\w-]+):?\s*(.*)", line)
        if not m: break
        d[m.group(1)] = m.group(2).strip()
    return d


def title_and_summary(nb: dict) -> tuple:
    "The notebook's `# Title` and its `> summary` (nbdev's front matter), from its first markdown cell."
    for c in nb["cells"]:
        if c["cell_type"] != "markdown": continue
        s = _src(c)
        t = re.search(r"^#\s+(.+)$", s, re.M)
        if not t: continue
        summ = re.search(r"^>\s*(.+(?:\n>\s*.+)*)", s, re.M)
        return t.group(1).strip(), (re.sub(r"\n>\s*", " ", summ.group(1)).strip() if summ else "")
    return None, ""


def links_html(rel: str, cfg: dict) -> str:
    "Open in Colab and the notebook on GitHub, for the notebook nbs/`rel`."
    colab = f"https://colab.research.google.com/github/{cfg['user']}/{cfg['repo']}/blob/{cfg['branch']}/nbs/{rel}"
    gh = f"{cfg['git_url']}/blob/{cfg['branch']}/nbs/{rel}"
    return (f'<p class="nb-links"><a class="colab-link" href="{colab}">Open in Colab</a> · '
            f'<a class="github-link" href="{gh}">the notebook on GitHub</a></p>')


def page_notebook(nb: dict, rel: str, cfg: dict) -> dict:
    "The site's copy of an executed notebook: nbdev's directives applied, the links under the title, skipped cells marked."
    cells, linked = [], False
    for c in nb["cells"]:
        c = dict(c)
        if c["cell_type"] == "code":
            src = _src(c)
            d = _directives(src)
            if "hide" in d or "default_exp" in d or d.get("include") == "false": continue
            code = "\n".join(l for l in src.split("\n") if not re.match(r"\s*#\s*\|", l)).strip("\n")
            skipped = c.get("metadata", {}).get("skipped")
            if skipped:
                code = f"# not run for this page ({skipped})\n" + code
            c["source"] = _lines(code)
            tags = []
            if d.get("echo") == "false" or "hide_input" in d: tags.append("hide-input")
            if d.get("output") == "false": c["outputs"] = []
            # drop empty results (a widget's repr) and the text/plain twin of an image: the page shows the image
            outs = []
            for o in c.get("outputs", []):
                if o.get("output_type") in ("execute_result", "display_data"):
                    data = dict(o.get("data", {}))
                    if not data: continue
                    if any(k.startswith("image/") or k == "text/html" for k in data): data.pop("text/plain", None)
                    o = {**o, "data": data}
                outs.append(o)
            c["outputs"] = outs
            if not code.strip() and not outs: continue
            c["metadata"] = {"tags": tags}
        cells.append(c)
        if not linked and c["cell_type"] == "markdown" and re.search(r"^#\s+", _src(c), re.M):
            cells.append({"cell_type": "markdown", "metadata": {}, "source": _lines(links_html(rel, cfg))})
            linked = True
    if not linked: cells.insert(0, {"cell_type": "markdown", "metadata": {}, "source": _lines(links_html(rel, cfg))})
    out = dict(nb, cells=cells)
    out["metadata"] = {k: v for k, v in nb.get("metadata", {}).items() if k in ("kernelspec", "language_info")}
    out["metadata"].setdefault("kernelspec", {"display_name": "Python 3", "language": "python", "name": "python3"})
    out["metadata"].setdefault("language_info", {"name": "python"})
    for c in out["cells"]:   # nbformat 4.5 wants ids; markdown cells have no outputs
        c.setdefault("id", f"c{len(str(c))}")
        if c["cell_type"] == "markdown": c.pop("outputs", None); c.pop("execution_count", None)
    return out


# ---------- the reading order and the API reference

# The notebooks fall into groups, shown apart in the navigation and the reading order (README's too, which
# tests/test_site.py compares with these): the core story, the chapters that build on it, and infrastructure, the
# short notebooks a learner can skip, each saying so at its top with this mark.
INFRA_MARK = "**Infrastructure: skip it on a first read"
CORE_LAST = "08a_trained_switch_sae"   # the core story: from the configuration to a trained, evaluated SAE
GROUPS = {"core": "The core story", "further": "Further chapters", "infra": "Infrastructure you can skip"}
GROUP_INTRO = {
    "core": "From synthetic data with known features to a trained and evaluated Switch SAE: read these first, in order.",
    "further": "The Switch SAE on a language model: its activations, evaluation inside the model, speed, the inspector, "
               "feature geometry, expert parallelism and its scaling, and the reproduction of the paper's claims.",
    "infra": "Short notebooks placed where the imports need them (file formats, flags, the tiny LM's training, the "
             "command line, other tools); each says at its top that it can be skipped, and which notebook to read next.",
}


def group_of(rel: str, nb: dict) -> str:
    "The group of the numbered notebook nbs/`rel`: `infra` when its first markdown cell carries `INFRA_MARK`."
    first = next((_src(c) for c in nb["cells"] if c["cell_type"] == "markdown"), "")
    if INFRA_MARK in first: return "infra"
    return "core" if Path(rel).stem <= CORE_LAST else "further"


def reading_order(pages: list, cfg: dict) -> str:
    lines = ["# Reading order", "",
             "The notebooks are the source of the library: `switch_sae/` is generated from them by `nbdev_export`. "
             "Each teaches one idea and tests it inline, and builds only on the ones before it. "
             "Every page below shows the notebook as it ran, outputs included, with a link to open it in Colab.", ""]
    intro = {GROUPS[g]: t for g, t in GROUP_INTRO.items()}
    for section, items in pages:
        if section == "Home": continue
        lines += [f"## {section}", ""] + ([intro[section], ""] if section in intro else [])
        lines += ["| notebook | what it is about |", "|---|---|"]
        for title, path, summary in items:
            if path.endswith(".ipynb"):
                lines.append(f"| [{title}]({path}) | {summary.replace('|', '&#124;')} |")
        lines.append("")
    lines += ["## The course", "",
              "In the course notebooks you write the parts of a Switch SAE yourself; a check after each exercise "
              "says what is wrong when something is. The pages show the exercises as they are given to you (with "
              "`raise NotImplementedError` where your code goes); the site ran them with the worked solutions, which "
              "have a page of their own.", ""]
    return "\n".join(lines)


def demo_dashboard(docs: Path) -> str:
    "Write the demo SAE's static dashboard (`switch-sae dashboard`, nbs/15a_dashboard) into the site: the reading order's section on it."
    from switch_sae.dashboard import write_dashboard
    from switch_sae.inspector import demo_dir
    s = write_dashboard(demo_dir(), docs / "dashboard", progress=False)
    return ("\n## The demo SAE's dashboard\n\n"
            f"[Every expert and latent of the demo SAE](dashboard/index.html): {s['latent_pages']} latent pages and "
            f"{s['experts']} expert pages from {s['tokens']} held-out tokens, as `switch-sae dashboard` writes them (`15a_dashboard`).\n")


def _clean_show_doc(md: str, src_link: str) -> str:
    md = re.sub(r"^\[source\]\(.*?\)\{.*?\}\s*$", "", md, flags=re.M)     # Quarto attributes; our own link below
    md = re.sub(r"\{target=.*?\}", "", md)
    md = md.replace("\n---\n", "\n", 1) if md.startswith("---") else md
    md = md.lstrip("-\n")
    return re.sub(r"^(### .+)$", lambda m: f"{m.group(1)}\n\n<small>[source]({src_link})</small>", md, count=1, flags=re.M)


def api_pages(cfg: dict) -> tuple:
    "Markdown pages of the API reference: an index, and one page per module with each exported symbol's `show_doc`."
    from nbdev.showdoc import show_doc
    from switch_sae._modidx import d
    pages, index = {}, ["# API reference", "",
                        "Every exported function and class, by module, as `show_doc` renders it from the docstrings "
                        "(and the parameters' comments). Each module is generated from one notebook, linked at the top "
                        "of its page.", "", "| module | notebook | exported names |", "|---|---|---|"]
    for mod, syms in sorted(d["syms"].items()):
        try: m, missing = importlib.import_module(mod), None
        except ImportError as e: m, missing = None, e   # a module of an optional dependency (saelens needs sae_lens)
        short = mod.split(".", 1)[1]
        head = (ROOT / "switch_sae" / f"{short}.py").read_text().split("\n", 3)[:3]
        nbm = re.search(r"File to edit: \.\./nbs/(\S+\.ipynb)", "\n".join(head))
        nb_rel = nbm.group(1) if nbm else None
        items = []
        for full in syms:
            parts = full[len(mod) + 1:].split(".")
            if m is None:
                items.append((0, ".".join(parts), None)); continue
            obj = m
            try:
                for p in parts: obj = getattr(obj, p)
            except AttributeError: continue
            try: line = inspect.getsourcelines(inspect.unwrap(obj))[1]
            except (TypeError, OSError): line = 0
            items.append((line, ".".join(parts), obj))
        items.sort(key=lambda t: (t[0], t[1]))
        body = [f"# {mod}", ""]
        if nb_rel:
            t, s = title_and_summary(json.loads((NBS / nb_rel).read_text()))
            body += [f"Generated from the notebook [{t or nb_rel}](../nbs/{nb_rel}). {s}", ""]
        for line, name, obj in items:
            src = f"{cfg['git_url']}/blob/{cfg['branch']}/switch_sae/{short}.py" + (f"#L{line}" if line else "")
            if m is None:
                md = (f"### {name}\n\n(documented in the notebook: this module needs {missing.name or 'an optional package'}, "
                      "which was not installed where the site was built)")
            else:
                try: md = show_doc(obj, name=name)._repr_markdown_()
                except Exception as e: md = f"### {name}\n\n(no documentation: {type(e).__name__})"
            body += [_clean_show_doc(md, src), ""]
        pages[f"api/{short}.md"] = "\n".join(body)
        names = ", ".join(f"`{n}`" for _, n, _ in items if "." not in n)
        nb_link = f"[{nb_rel}](../nbs/{nb_rel})" if nb_rel else ""
        index.append(f"| [{mod}]({short}.md) | {nb_link} | {names} |")
    pages["api/index.md"] = "\n".join(index) + "\n"
    return pages


# ---------- the site

CSS = """
.nb-links { font-size: .8rem; margin: -.4rem 0 1rem; }
.nb-links a.colab-link { font-weight: 600; padding: .1rem .5rem; border: 1px solid #f9ab00; border-radius: .3rem; }
.static-widget { border: 1px dashed #999; padding: .5rem; margin: .3rem 0; font-size: .75rem; }
.static-widget-note { background: #fff8e1; padding: .4rem .6rem; margin: 0 0 .5rem; }
.static-widget select, .static-widget textarea { font-size: .75rem; }
.jp-OutputArea-output img, .static-widget img { max-width: 100%; height: auto; }
"""


def nav_yaml(nav: list, indent: int = 0) -> str:
    out = []
    for title, val in nav:
        t = json.dumps(title)
        if isinstance(val, list): out.append(" " * indent + f"- {t}:\n" + nav_yaml(val, indent + 4))
        else: out.append(" " * indent + f"- {t}: {json.dumps(val)}")
    return "\n".join(out)


GUIDE_DIRS = ("guides", "images")      # docs/guides: the engineering pages README links to; docs/images: their figures
GUIDE_ORDER = ("training", "speed", "expert_parallelism", "reproduction", "interop", "website")


def layout(cfg: dict) -> list:
    "Copy the executed notebooks into _proc/site/docs and write the generated pages; returns the nav."
    if SRC.exists(): shutil.rmtree(SRC)
    docs = SRC / "docs"
    (docs / "nbs" / "course").mkdir(parents=True)
    groups, course, checks, solutions = {g: [] for g in GROUPS}, [], [], []
    home = None
    for nb_path in execute.notebooks():
        rel = nb_path.relative_to(NBS).as_posix()
        nb = json.loads(execute.cache_path(nb_path).read_text())
        page = page_notebook(nb, rel, cfg)
        title, summary = title_and_summary(nb)
        if rel == "index.ipynb":
            (docs / "index.ipynb").write_text(json.dumps(page)); home = title; continue
        dest = f"nbs/{rel}"
        (docs / dest).write_text(json.dumps(page))
        item = (f"{Path(rel).stem.split('_')[0]} · {title}" if rel[:2].isdigit() else title, dest, summary)
        if rel.startswith("course/00"): checks.append(item)
        elif rel.startswith("course/99"): solutions.append(item)
        elif rel.startswith("course/"): course.append(item)
        else: groups[group_of(rel, json.loads(nb_path.read_text()))].append(item)   # the notebook's own first cell
    if home is None: raise SystemExit("nbs/index.ipynb is missing: the home page comes from it (python docs/readme.py --from-readme)")
    pages = [(GROUPS[g], items) for g, items in groups.items()] + [("Course", course + checks), ("Solutions", solutions)]
    (docs / "reading_order.md").write_text(reading_order(pages, cfg) + demo_dashboard(docs))
    for path, text in api_pages(cfg).items():
        (docs / path).parent.mkdir(parents=True, exist_ok=True)
        (docs / path).write_text(text)
    (docs / "extra.css").write_text(CSS)
    guides = []
    for sub in GUIDE_DIRS:                     # at docs/docs/...: README's links (docs/guides/x.md) hold on the site too
        if (ROOT / "docs" / sub).exists(): shutil.copytree(ROOT / "docs" / sub, docs / "docs" / sub)
    shutil.copytree(ROOT / "results", docs / "results")   # the committed outputs README and the guides link to
    for g in sorted((docs / "docs" / "guides").glob("*.md"), key=lambda g: GUIDE_ORDER.index(g.stem) if g.stem in GUIDE_ORDER else 99):
        guides.append((g.read_text().split("\n", 1)[0].lstrip("# ").strip(), f"docs/guides/{g.name}"))
    api = [("Index", "api/index.md")] + [(p.stem, f"api/{p.name}") for p in sorted((docs / "api").glob("*.md")) if p.stem != "index"]
    return ([("Home", "index.ipynb"), ("Reading order", "reading_order.md")]
            + [(section, [(t, p) for t, p, _ in items]) for section, items in pages] + [("Guides", guides), ("API reference", api)])


def mkdocs_yml(cfg: dict, nav: list) -> str:
    return f"""site_name: {json.dumps(cfg['title'])}
site_description: {json.dumps(cfg['description'])}
site_url: {json.dumps(cfg['site_url'])}
repo_url: {json.dumps(cfg['git_url'])}
docs_dir: docs
use_directory_urls: true
theme:
  name: material
  font: false            # no web fonts: the site works offline
  features: [navigation.sections, navigation.top, search.highlight, content.code.copy]
extra_css: [extra.css]
markdown_extensions: [tables, admonition, attr_list, md_in_html, toc]
plugins:
  - search
  - mkdocs-jupyter:
      include: ["*.ipynb"]
      execute: false       # executed once by docs/execute.py (make test), kept in _proc/executed
      include_requirejs: false
      custom_mathjax_url: {json.dumps(MATHJAX_MARK)}   # replaced by the site's own copy (`vendor_mathjax`)
      no_prompt: true      # execnb leaves no execution counts: no empty "In [ ]:"
      toc_depth: 3
      cache_dir: {json.dumps(str(ROOT / "_proc" / "mkdocs-jupyter"))}
      remove_tag_config:
        remove_input_tags: [hide-input]
nav:
{nav_yaml(nav, 2)}
"""


# ---------- formulas, typeset offline

MATHJAX_MARK = "@MATHJAX@"          # what the notebook pages load, until `vendor_mathjax` points it at the site's copy
MATHJAX_DIR = "assets/mathjax"
# MathJax 2 as Jupyter ships it: TeX input, HTML-CSS output with the STIX-Web fonts (the only fonts in the package)
MATHJAX_LOCAL = """MathJax.Hub.Config({"HTML-CSS": {availableFonts: [], preferredFont: null, webFont: "STIX-Web",
                                   imageFont: null}, messageStyle: "none"});
MathJax.Ajax.loadComplete("[MathJax]/config/local/switch_sae.js");
"""


def vendor_mathjax(site: Path) -> int:
    """Copy MathJax into the site and point every page that loads it at that copy, by a path relative to the page.
    Returns the number of pages changed."""
    try:
        import jupyter_server_mathjax
    except ImportError as e:
        raise SystemExit("The site typesets its formulas with a local MathJax: pip install jupyter-server-mathjax "
                         "(a dev requirement: pip install -e '.[dev]')") from e
    src = Path(jupyter_server_mathjax.__file__).parent / "static"
    dest = site / MATHJAX_DIR
    if dest.exists(): shutil.rmtree(dest)
    shutil.copytree(src, dest)
    (dest / "config" / "local").mkdir(parents=True, exist_ok=True)
    (dest / "config" / "local" / "switch_sae.js").write_text(MATHJAX_LOCAL)
    n = 0
    for page in site.rglob("*.html"):
        h = page.read_text()
        if MATHJAX_MARK not in h: continue
        rel = os.path.relpath(dest / "MathJax.js", page.parent).replace(os.sep, "/")
        page.write_text(h.replace(MATHJAX_MARK, f"{rel}?config=TeX-AMS-MML_HTMLorMML-full,Safe,local/switch_sae"))
        n += 1
    return n


def fix_md_links(site: Path) -> int:
    """Links to markdown files in the pages made from notebooks (the home page is README: `docs/guides/speed.md`)
    pointed at the page MkDocs made of that file (`docs/guides/speed/`). Returns how many were changed."""
    n = 0
    for page in site.rglob("*.html"):
        h = page.read_text()
        def sub(m):
            nonlocal n
            path, frag = m.group(2), m.group(3) or ""
            stem = path[:-3]
            new = (stem.rsplit("/", 1)[0] + "/" if "/" in stem else "./") if stem.split("/")[-1] in ("README", "index") else stem + "/"
            if not (page.parent / new / "index.html").exists(): return m.group(0)
            n += 1
            return f'{m.group(1)}{new}{frag}"'
        h2 = re.sub(r'(href=")(?![a-z]+:|/|#)([^"#]+\.md)(#[^"]*)?"', sub, h)
        if h2 != h: page.write_text(h2)
    return n


def _text(h: str) -> str:
    h = re.sub(r"<code>.*?</code>", "", h, flags=re.S)
    h = re.sub(r"<[^>]+>", "", h).replace("\u00b6", "").replace("&para;", "")
    return " ".join(html.unescape(h).split())


def fix_toc(site: Path) -> int:
    """Point each table-of-contents link of a notebook page at its heading: mkdocs-jupyter's table of contents
    slugs a heading without its `code` (`What encode and forward return` -> #what-and-return) where nbconvert's
    id keeps it; such links are matched to the heading by text. Returns how many links were fixed."""
    n = 0
    for page in site.rglob("*.html"):
        doc = page.read_text()
        ids = set(re.findall(r'\sid="([^"]+)"', doc))
        heads = [(_text(m.group(2)), m.group(1)) for m in re.finditer(r'<h[1-6] id="([^"]+)">(.*?)</h[1-6]>', doc, re.S)]
        toc = re.compile(r'(<a href="#)([^"]*)(" class="md-nav__link">\s*<span class="md-ellipsis">)(.*?)(</span>)', re.S)
        fixes, used = {}, set()
        for m in toc.finditer(doc):
            href, text = m.group(2), " ".join(html.unescape(re.sub(r"<[^>]+>", "", m.group(4))).split())
            if href in ids or (href, text) in fixes: continue
            cand = [i for t, i in heads if t == text and i not in used]
            if cand: fixes[(href, text)] = cand[0]; used.add(cand[0])
        if not fixes: continue
        def sub(m):
            key = (m.group(2), " ".join(html.unescape(re.sub(r"<[^>]+>", "", m.group(4))).split()))
            return m.group(1) + fixes.get(key, m.group(2)) + m.group(3) + m.group(4) + m.group(5)
        page.write_text(toc.sub(sub, doc))
        n += len(fixes)
    return n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Build the website in _docs/ from the notebooks")
    ap.add_argument("--n_workers", type=int, default=2)
    ap.add_argument("--no-execute", action="store_true", help="fail instead of running notebooks whose copy is stale")
    a = ap.parse_args(argv)
    t0 = time.time()
    cfg = config()
    lib = execute._lib_hash()
    stale = [f for f in execute.notebooks() if not execute.is_fresh(f, lib)]
    if stale:
        if a.no_execute: raise SystemExit(f"{len(stale)} notebooks have no up-to-date executed copy: run python docs/execute.py")
        rc = execute.main(["--n_workers", str(a.n_workers)])
        if rc: return rc
    t1 = time.time()
    nav = layout(cfg)
    (SRC / "mkdocs.yml").write_text(mkdocs_yml(cfg, nav))
    site = cfg["doc_path"]
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    p = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--clean", "-q", "-f", str(SRC / "mkdocs.yml"), "-d", str(site)], env=env,
                       capture_output=True, text=True)
    if p.returncode:
        print(p.stdout, p.stderr, file=sys.stderr); return p.returncode
    fixed = fix_toc(site)
    vendor_mathjax(site)
    fix_md_links(site)
    warnings = [l for l in (p.stdout + p.stderr).splitlines() if "WARNING" in l]
    for w in warnings: print(w)
    n = len(list(site.rglob("*.html")))
    print(f"site: {site.relative_to(ROOT)}/index.html, {n} pages (notebooks executed in {t1 - t0:.0f} s, "
          f"site built in {time.time() - t1:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
