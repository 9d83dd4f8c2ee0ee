"""Run every notebook once, as `nbdev_test` does, and keep the executed copies for the website.

    python docs/execute.py [--n_workers 2] [--path nbs/14_geometry.ipynb] [--force]

This is `make test`'s notebook step: the same notebooks (nbdev's `nbglob`, `.notest` folders
left out), the same cells (those flagged with settings.ini `tst_flags` -- notest, gpu, slow --
and `#| eval: false` ones are skipped), the same environment (`IN_TEST=1`, so the course runs
with its worked solutions), and it fails like `nbdev_test` when a cell raises. What it adds:
each notebook that passed is written, with its outputs, to `_proc/executed/<same path>.ipynb`,
which `docs/build.py` turns into the website without running anything again.

A copy is reused while its notebook, the library (`switch_sae/*.py`), settings.ini's `tst_flags`
and this file are unchanged (a hash of them is stored in the copy's metadata), so `make docs` after
`make test` executes nothing, and `make docs` twice executes once.

Widgets cannot be saved as they are (they need a kernel), so each widget a cell displays is
replaced in the copy by a static HTML rendering of its current state, with a note saying so.
"""
from __future__ import annotations
import argparse, base64, hashlib, html, json, os, sys, time, traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "_proc" / "executed"
KEY = "switch_sae_docs"          # notebook metadata key holding the cache hash


def notebooks(path: str | None = None) -> list[Path]:
    "The notebooks `nbdev_test` runs (all of nbs/, or those matching `path`), sorted."
    from nbdev.doclinks import nbglob
    from nbdev.test import _keep_file
    from nbdev.config import get_config
    if path and not Path(path).is_dir():     # a notebook, or a glob such as "nbs/course/*.ipynb"
        files = [Path(path)] if Path(path).exists() else [p for p in Path().glob(path) if p.suffix == ".ipynb"]
        if not files: raise SystemExit(f"no notebook matches {path!r}")
    else: files = nbglob(path, as_path=True)
    return [f.absolute() for f in sorted(files) if _keep_file(f, ".notest")]


def _lib_hash() -> str:
    h = hashlib.sha256()
    for p in sorted((ROOT / "switch_sae").glob("*.py")) + [Path(__file__).resolve()]:
        h.update(p.name.encode()); h.update(p.read_bytes())
    from nbdev.config import get_config
    h.update(get_config().tst_flags.encode())
    return h.hexdigest()


def cache_path(nb: Path) -> Path:
    return CACHE / nb.resolve().relative_to(ROOT / "nbs")


def nb_hash(nb: Path, lib: str) -> str:
    return hashlib.sha256(lib.encode() + nb.read_bytes()).hexdigest()


def is_fresh(nb: Path, lib: str) -> bool:
    "Whether the executed copy of `nb` exists and was made from this notebook and this library."
    p = cache_path(nb)
    if not p.exists(): return False
    try: meta = json.loads(p.read_text()).get("metadata", {}).get(KEY, {})
    except (OSError, ValueError): return False
    return meta.get("hash") == nb_hash(nb, lib)


# ---------- widgets: a static rendering of the state they were left in

def _style(layout) -> str:
    css = []
    for k in ("width", "height", "max_height", "border", "padding", "margin", "overflow"):
        v = getattr(layout, k, None)
        if v: css.append(f"{k.replace('_', '-')}:{v}")
    return ";".join(css)


def widget_html(w) -> str:
    "HTML showing an ipywidgets widget (and its children) as it is now, without a kernel."
    import ipywidgets as W
    cls = " ".join(getattr(w, "_dom_classes", ()))
    style = _style(w.layout) if hasattr(w, "layout") else ""
    desc = f'<span class="static-widget-desc">{html.escape(w.description)}</span> ' if getattr(w, "description", "") else ""
    if isinstance(w, W.Box):
        direction = "row" if isinstance(w, W.HBox) else "column"
        inner = "".join(widget_html(c) for c in w.children)
        return f'<div class="static-widget-box {cls}" style="display:flex;flex-direction:{direction};gap:4px;{style}">{inner}</div>'
    if isinstance(w, (W.HTML, W.HTMLMath)):
        return f'<div class="{cls}" style="{style}">{desc}{w.value}</div>'
    if isinstance(w, W.Label):
        return f'<div class="{cls}">{html.escape(w.value)}</div>'
    if isinstance(w, W.Image):
        if not w.value: return ""
        b64 = base64.b64encode(w.value).decode()
        return f'<img class="{cls}" alt="plot" style="max-width:100%" src="data:image/{w.format};base64,{b64}">'
    if isinstance(w, (W.Dropdown, W.Select, W.RadioButtons, W.ToggleButtons)):
        label = w.label if w.label is not None else ""
        return (f'<div class="{cls}">{desc}<select disabled><option selected>{html.escape(str(label))}</option></select> '
                f'<small>({len(w.options)} choices)</small></div>')
    if isinstance(w, W.Textarea):
        return f'<div class="{cls}">{desc}<textarea readonly rows="4" style="width:100%">{html.escape(w.value)}</textarea></div>'
    if isinstance(w, (W.Text, W.IntText, W.FloatText, W.BoundedIntText, W.BoundedFloatText, W.IntSlider, W.FloatSlider,
                      W.Checkbox, W.ToggleButton)):
        return f'<div class="{cls}">{desc}<code>{html.escape(str(w.value))}</code></div>'
    if isinstance(w, W.Button):
        return f'<div class="{cls}"><button disabled>{html.escape(w.description)}</button></div>'
    return f'<div class="{cls}"><code>{html.escape(repr(w)[:200])}</code></div>'


WIDGET_NOTE = ('<p class="static-widget-note"><b>A static picture of the widget</b>, as the cell left it (the demo SAE, '
               'the first demo text). The live widget, where you pick a text, a token, an expert or a latent, needs a '
               'running Python kernel: open this notebook in Jupyter or Colab (link at the top of the page).</p>')


def freeze_widgets(nb) -> int:
    "Replace each widget output of `nb` by a static HTML rendering; returns how many."
    from ipywidgets import Widget
    from ipywidgets.widgets.widget import _instances
    n = 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            view = data.get("application/vnd.jupyter.widget-view+json")
            if not view: continue
            w = _instances.get(view.get("model_id"))
            body = widget_html(w) if w is not None else "<i>(the widget's state was not found)</i>"
            out["data"] = {"text/html": f'<div class="static-widget">{WIDGET_NOTE}{body}</div>',
                           "text/plain": data.get("text/plain", "")}
            n += 1
    return n


# ---------- running one notebook

def execute(fn: Path, skip_flags=(), lib: str = "", showerr: bool = True):
    "Run `fn` as nbdev's `test_nb` does; on success write the executed copy. Returns (passed, seconds)."
    from fastcore.basics import str2bool
    from fastcore.xtras import working_directory
    from nbdev.process import NBProcessor, nb_lang
    from nbdev.frontmatter import FrontmatterProc
    from execnb.shell import CaptureShell
    from execnb.nbio import write_nb
    os.environ["IN_TEST"] = "1"
    sys.path.insert(0, str(ROOT))
    flags = set(skip_flags)
    fm = getattr(NBProcessor(fn, procs=FrontmatterProc, process=True).nb, "frontmatter_", {})
    nb = NBProcessor(fn, rm_directives=False).nb     # as nbdev_test's, but the saved copy keeps its title and directives
    skipped = []

    def no_eval(cell):
        if cell.cell_type != "code": return True
        if "nbdev_export" + "(" in cell.source: return True
        direc = getattr(cell, "directives_", {}) or {}
        why = ("eval: false" if direc.get("eval:", [""])[0].lower() == "false" else
               next((f for f in sorted(flags) if f in direc), None))
        if why: cell.setdefault("metadata", {})["skipped"] = why
        return bool(why)

    t0 = time.time()
    run = not (str2bool(fm.get("skip_exec", False)) or nb_lang(nb) != "python")
    if run:
        k = CaptureShell(fn)
        try:
            with working_directory(fn.parent):
                k.run_all(nb, exc_stop=True, preproc=no_eval)
        except Exception:
            if showerr: sys.stderr.write(k.prettytb(fname=fn) + "\n")
            return False, time.time() - t0
        try: freeze_widgets(nb)
        except ImportError: pass
    nb.metadata[KEY] = dict(hash=nb_hash(fn, lib), seconds=round(time.time() - t0, 1), executed=run)
    out = cache_path(fn)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    write_nb(nb, tmp)
    tmp.replace(out)
    return True, time.time() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--path", default=None, help="a notebook or glob (default: every notebook of nbs/)")
    ap.add_argument("--n_workers", type=int, default=2)
    ap.add_argument("--force", action="store_true", help="execute even the notebooks whose copy is up to date")
    ap.add_argument("--flags", default="", help="space separated tst_flags to run anyway (as nbdev_test --flags)")
    a = ap.parse_args(argv)
    from fastcore.parallel import parallel
    from fastcore.xtras import working_directory
    from nbdev.config import get_config
    cfg = get_config()
    skip = sorted(set(cfg.tst_flags.split()) - set(a.flags.split()))
    lib = _lib_hash()
    files = notebooks(a.path)
    todo = [f for f in files if a.force or not is_fresh(f, lib)]
    print(f"{len(files)} notebooks, {len(files) - len(todo)} already executed (_proc/executed is up to date), "
          f"{len(todo)} to run, skipping cells flagged {' '.join(skip)}")
    if not todo: return 0
    t0 = time.time()
    # the workers get `execute` from this module by name: a notebook run in a worker may replace its __main__
    run = __import__("execute").execute if __name__ == "__main__" else execute
    with working_directory(cfg.nbs_path):
        res = parallel(run, todo, skip_flags=skip, lib=lib, n_workers=a.n_workers if len(todo) > 1 else 0, pause=0.01)
    failed = [f for (ok, _), f in zip(res, todo) if not ok]
    for (ok, t), f in sorted(zip(res, todo), key=lambda r: -r[0][1])[:5]:
        print(f"  {f.relative_to(ROOT)}: {t:.0f} s")
    if failed:
        sys.stderr.write("\nNotebooks failed:\n\t" + "\n\t".join(str(f.relative_to(ROOT)) for f in failed) + "\n")
        return 1
    print(f"Success: {len(todo)} notebooks executed in {time.time() - t0:.0f} s, copies in {CACHE.relative_to(ROOT)}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
