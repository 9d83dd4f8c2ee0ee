"""The library's modules import only downward: no cycle, nothing imports the CLI, no layer leans on a higher one.

Every module of `switch_sae/` is parsed with `ast`; its imports (function-level ones too) give the edges of a graph
over the package's modules. A module missing from `LAYERS` fails the test: place a new module in its layer here.

The notebooks read in order: a numbered notebook of `nbs/` imports only the modules of the notebooks that sort
before it (`test_notebooks_import_only_earlier_notebooks`), so a learner never meets a module before its notebook.
"""
import ast, json, re
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "switch_sae"
NBS = PKG.parent / "nbs"

# Lowest first. A module may import modules of its own layer (without a cycle) and of the layers below it.
LAYERS = {
    "core": ["version", "config", "args", "data", "losses", "router", "topk", "switch", "files", "shards", "group",
             "checkpoint", "train"],
    # tiny_lm is the language model `activations` loads by name; report draws the evaluation a run ends with
    "data": ["tiny_lm", "activations", "evaluate", "report", "lm_eval", "sources"],
    "scale": ["distributed", "run"],   # run: `switch-sae train` in one process or many
    "tools": ["geometry", "inspector", "dashboard", "bench", "scaling", "sweep", "course_solutions", "course", "interop", "saelens"],
    "api": ["__init__"],          # the package root: `import switch_sae` gives the public names, nothing imports it
    "cli": ["cli"],               # the command line, on top of everything, imported by nothing
}
LEVEL = {m: i for i, names in enumerate(LAYERS.values()) for m in names}
# modules that import an optional dependency (sae_lens) when they are imported: loaded inside a function, when it is there
OPTIONAL = {"saelens"}
LAYER_OF = {m: layer for layer, names in LAYERS.items() for m in names}
GENERATED = {"_modidx"}           # nbdev's index of names, imports nothing


def modules() -> list:
    return sorted(p.stem for p in PKG.glob("*.py") if p.stem not in GENERATED)


def imported(name: str) -> set:
    "The package modules that module `name` imports, anywhere in its source (function-level imports too)."
    return imports_in((PKG / f"{name}.py").read_text(), name, set(modules()))


def imports_in(src: str, name: str, mods: set) -> set:
    "The modules of `mods` (or `__init__`, the package root) that the source `src` of module `name` imports."
    tree, found = ast.parse(src, filename=f"{name}.py"), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] == "switch_sae": found.add(parts[1] if len(parts) > 1 else "__init__")
        elif isinstance(node, ast.ImportFrom):
            if node.level > 1: continue                  # nothing above the package
            if node.level == 1: parts = (node.module or "").split(".") if node.module else []
            elif (node.module or "").split(".")[0] == "switch_sae": parts = node.module.split(".")[1:]
            else: continue
            if parts: found.add(parts[0])
            else:   # `from . import x` / `from switch_sae import x`: x is a module, or a name of the package root
                found |= {a.name if a.name in mods else "__init__" for a in node.names}
    found.discard(name)
    return found


def graph() -> dict:
    return {m: imported(m) for m in modules()}


def find_cycle(g: dict):
    "One cycle of `g` as a list of modules (first repeated at the end), or None."
    state, stack = {}, []
    def visit(m):
        state[m] = "open"; stack.append(m)
        for n in sorted(g.get(m, ())):
            if state.get(n) == "open": return stack[stack.index(n):] + [n]
            if n not in state:
                c = visit(n)
                if c: return c
        state[m] = "done"; stack.pop()
        return None
    for m in sorted(g):
        if m not in state:
            c = visit(m)
            if c: return c
    return None


def test_every_module_has_a_layer():
    missing = [m for m in modules() if m not in LEVEL]
    assert not missing, f"modules without a layer in tests/test_layers.py LAYERS: {missing}"


def test_no_import_cycle():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_nothing_imports_the_cli():
    bad = [f"{m} -> cli" for m, deps in graph().items() if "cli" in deps]
    assert not bad, "library modules import the CLI: " + ", ".join(bad)


def test_imports_only_downward():
    bad = [f"{m} ({LAYER_OF[m]}) -> {n} ({LAYER_OF[n]})" for m, deps in sorted(graph().items()) for n in sorted(deps)
           if m in LEVEL and n in LEVEL and LEVEL[n] > LEVEL[m]]
    assert not bad, "imports from a lower layer to a higher one: " + "; ".join(bad)


def test_package_modules_imported_at_the_top():
    "Function-level imports are for optional dependencies only: a module of the package is imported at the top."
    bad = []
    for m in modules():
        tree = ast.parse((PKG / f"{m}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                inner = "\n".join(ast.unparse(n) for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom)))
                found = (imports_in(inner, m, set(modules())) if inner else set()) - OPTIONAL
                bad += [f"{m}.{node.name} imports {n}" for n in sorted(found)]
    assert not bad, "imports of package modules inside functions (move them to the top): " + "; ".join(sorted(set(bad)))


def test_the_checker_sees_what_it_should():
    "The parser finds function-level and package-root imports, and the cycle finder finds a cycle."
    src = ("import torch\nfrom . import tiny_lm\nfrom .config import SwitchSAEConfig\nclass A:\n    def f(self):\n"
           "        from switch_sae import __version__\n        import switch_sae.train\n"
           "        from switch_sae.cli import main\n")
    assert imports_in(src, "x", {"tiny_lm", "config", "train", "cli"}) == {"tiny_lm", "config", "__init__", "train", "cli"}
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


# ---------- the notebooks read in order

ROOT_NB = "99_api"                # exports the package root, `__init__`, which gathers every module: it comes last


def nb_code(src: str) -> str:
    "A code cell's source as Python: IPython magics (`%matplotlib`) and shell lines (`!pip`) blanked, indentation kept."
    return "\n".join(re.match(r"\s*", l).group() + "pass" if l.lstrip().startswith(("%", "!")) else l
                     for l in src.split("\n"))


def nb_deps(nb: dict, name: str, mods: set) -> tuple:
    """The notebook's own module (its `#| default_exp`, or None) and the package modules its code cells import
    (`from switch_sae.X import`, `import switch_sae.X`, `from switch_sae import X`, `from .X import`), without the
    package root and its own module."""
    own, found = None, set()
    for i, c in enumerate(nb["cells"]):
        if c["cell_type"] != "code": continue
        src = c["source"] if isinstance(c["source"], str) else "".join(c["source"])
        m = re.search(r"^\s*#\s*\|\s*default_exp\s+(\S+)", src, re.M)
        if m: own = m.group(1)
        try: found |= imports_in(nb_code(src), own or name, mods)
        except SyntaxError as e: raise AssertionError(f"{name}: code cell {i} is not Python: {e}") from e
    return own, found - {"__init__", own}


def order_violations(nbs: dict, mods: set, defined_elsewhere: dict = None) -> list:
    """`nbs` maps each numbered notebook's name to its JSON; `defined_elsewhere` maps modules to notebooks outside
    the numbered ones (the course). Each import of a module whose notebook does not sort before the importer."""
    deps = {n: nb_deps(nb, n, mods) for n, nb in nbs.items()}
    home = dict(defined_elsewhere or {})
    home.update({own: n for n, (own, _) in deps.items() if own})
    order = sorted(nbs)
    bad = []
    for n in order:
        for mod in sorted(deps[n][1]):
            where = home.get(mod)
            if where is None: bad.append(f"{n} imports switch_sae.{mod}, which no notebook defines")
            elif where not in order or order.index(where) > order.index(n):
                bad.append(f"{n} imports switch_sae.{mod}, defined by {where}, which comes after it")
    return bad


def numbered_notebooks() -> dict:
    "The numbered notebooks of nbs/ (not the course, not index, not 99_api, the package root), name -> JSON."
    return {p.stem: json.loads(p.read_text()) for p in sorted(NBS.glob("*.ipynb"))
            if p.stem[:1].isdigit() and p.stem != ROOT_NB}


def test_notebooks_import_only_earlier_notebooks():
    "Read in the order of their names, each numbered notebook imports only modules defined by the notebooks before it."
    course = {}
    for p in sorted((NBS / "course").glob("*.ipynb")):
        own, _ = nb_deps(json.loads(p.read_text()), p.stem, set())
        if own: course[own] = f"course/{p.stem}"
    nbs = numbered_notebooks()
    mods = set(modules()) | {o for o in (nb_deps(nb, n, set())[0] for n, nb in nbs.items()) if o} | set(course)
    bad = order_violations(nbs, mods, course)
    assert not bad, (f"{len(bad)} imports of a module that a later notebook defines (move the code or the import, "
                     "or the notebook):\n" + "\n".join(bad))


def test_the_notebook_order_checker_sees_what_it_should():
    "The notebook parser finds every form of import and skips strings and magics; a planted violation is named."
    cell = lambda src: {"cell_type": "code", "source": src.splitlines(True), "outputs": []}
    md = {"cell_type": "markdown", "source": ["# A\n", "from switch_sae.c import nothing (markdown)"]}
    nbs = {"01_a": {"cells": [md, cell("#| default_exp a"), cell("#| export\nfrom .b import f\nimport switch_sae"),
                              cell("%matplotlib inline\nif True:\n    !ls\n    import switch_sae.c\n"
                                   "cmd = 'python -m switch_sae.d'")]},
           "02_b": {"cells": [cell("#| default_exp b\n"), cell("from switch_sae import a, c as C\nfrom switch_sae.b import g")]},
           "03_c": {"cells": [cell("#| default_exp c")]},
           "04_d": {"cells": [cell("#| default_exp d\nfrom switch_sae import course")]}}
    mods = {"a", "b", "c", "d", "course"}
    assert nb_deps(nbs["01_a"], "01_a", mods) == ("a", {"b", "c"})
    assert nb_deps(nbs["02_b"], "02_b", mods) == ("b", {"a", "c"})
    assert order_violations(nbs, mods, {"course": "course/00_checks"}) == [
        "01_a imports switch_sae.b, defined by 02_b, which comes after it",
        "01_a imports switch_sae.c, defined by 03_c, which comes after it",
        "02_b imports switch_sae.c, defined by 03_c, which comes after it",
        "04_d imports switch_sae.course, defined by course/00_checks, which comes after it"]
    assert "01_a imports switch_sae.c, which no notebook defines" in order_violations({"01_a": nbs["01_a"]}, mods)
    in_order = {"00_c": nbs["03_c"], "01_a": {"cells": [cell("#| default_exp a")]}, "02_b": nbs["02_b"]}
    assert order_violations(in_order, mods) == []
