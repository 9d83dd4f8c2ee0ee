"""The website (`make docs`): built from the notebooks, every link and image of it checked, and opened in
headless Chromium: the home page, a core notebook page with its plots loaded, the inspector's static
rendering, a course page, the API reference and a search.

The build reuses the executed notebooks that `make test`'s notebook step leaves in `_proc/executed/`
(and runs the missing ones, a few minutes, when run on its own). Needs Debian's `chromium` and
`chromium-driver` (`.ci/run` installs them) and the dev requirements (mkdocs, selenium). Without the
browser the browser part is skipped, except in CI (CI=true), where a missing browser is an error."""
import functools, html.parser, http.server, os, re, shutil, subprocess, sys, threading, time
from pathlib import Path
from urllib.parse import urljoin, urlparse, unquote
import pytest
from conftest import headless_chromium

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "_docs"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
IN_CI = os.environ.get("CI") == "true"


@pytest.fixture(scope="module")
def site():
    "Build the site (notebooks executed only where their copy is stale) and return its folder."
    for mod in ("mkdocs", "mkdocs_jupyter", "material"):
        if IN_CI: __import__(mod)
        else: pytest.importorskip(mod, reason=f"{mod} is not installed (pip install -e '.[dev]')")
    t0 = time.time()
    p = subprocess.run([sys.executable, str(ROOT / "docs" / "build.py")], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=1800)
    assert p.returncode == 0, f"docs/build.py failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-5000:]}"
    print(f"\nsite built in {time.time() - t0:.0f} s: {p.stdout.strip().splitlines()[-1]}")
    return SITE


class _Refs(html.parser.HTMLParser):
    "The links, images, scripts and stylesheets of a page, and its element ids."
    def __init__(self):
        super().__init__(); self.refs, self.ids = [], set()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a: self.ids.add(a["id"])
        if tag == "a" and a.get("href"): self.refs.append(("link", a["href"]))
        elif tag == "img" and a.get("src") is not None: self.refs.append(("image", a["src"]))
        elif tag == "link" and a.get("href") and a.get("rel") != "canonical": self.refs.append(("stylesheet", a["href"]))
        elif tag == "script" and a.get("src"): self.refs.append(("script", a["src"]))


@functools.lru_cache(maxsize=None)
def _parse(path: Path) -> _Refs:
    r = _Refs(); r.feed(path.read_text(errors="replace")); return r


@functools.lru_cache(maxsize=None)
def _site_url() -> str:
    m = re.search(r'^site_url:\s*"?([^"\n]+)"?', (ROOT / "_proc" / "site" / "mkdocs.yml").read_text(), re.M)
    return m.group(1) if m else "/"


def _target(site: Path, page: Path, ref: str):
    "The file a relative reference of `page` points to, and its #fragment."
    base = "/" + page.relative_to(site).as_posix()
    u = urlparse(urljoin(base, ref))
    path = unquote(u.path)
    prefix = urlparse(_site_url()).path            # 404.html links from the site's root on its host: /switch_sae/...
    if ref.startswith("/") and prefix != "/" and path.startswith(prefix): path = path[len(prefix) - 1:]
    p = site / path.lstrip("/")
    if u.path.endswith("/") or p.is_dir(): p = p / "index.html"
    return p, unquote(u.fragment)


def test_readme_reading_order_groups_the_notebooks_as_the_site_does():
    """README's reading order lists every numbered notebook once, in order, under the group the site's navigation
    gives it (`docs/build.py` `group_of`: infrastructure is what says so at its top). Needs no site build."""
    import json
    sys.path.insert(0, str(ROOT / "docs"))
    import build
    text = (ROOT / "README.md").read_text()
    section = text[text.index("\n## Reading order\n"):]
    section = section[:section.find("\n## ", 1)] if "\n## " in section[1:] else section
    listed, group = {}, None
    titles = {t: g for g, t in build.GROUPS.items()}
    for line in section.splitlines():
        if line.startswith("### "): group = titles.get(line[4:].strip())
        m = re.match(r"\|\s*`(\d\w*)`\s*\|", line)
        if m and group:
            assert m.group(1) not in listed, f"README lists {m.group(1)} twice"
            listed[m.group(1)] = group
    assert set(listed.values()) == set(build.GROUPS), f"README's reading order lacks a group: {sorted(set(listed.values()))}"
    want = {p.stem: build.group_of(p.name, json.loads(p.read_text())) for p in sorted((ROOT / "nbs").glob("[0-9]*.ipynb"))}
    assert listed == want, ("README's reading order and the site disagree (notebook: README's group, the site's): "
                            + ", ".join(f"{n}: {listed.get(n)}, {want.get(n)}" for n in sorted(set(listed) | set(want))
                                        if listed.get(n) != want.get(n)))
    for g in build.GROUPS:
        names = [n for n in listed if listed[n] == g]
        assert names == sorted(names), f"README lists the {build.GROUPS[g]!r} out of order: {names}"


def test_every_link_and_image_of_the_site(site):
    pages = sorted(site.rglob("*.html"))
    assert len(pages) > 40, f"only {len(pages)} pages built"
    broken, external_images, external_code, anchors, n = [], [], [], [], 0
    for page in pages:
        for kind, ref in _parse(page).refs:
            n += 1
            if ref.startswith(("data:", "mailto:", "javascript:")): continue
            if re.match(r"^[a-z]+://", ref) or ref.startswith("//"):
                if kind == "image": external_images.append(f"{page.relative_to(site)}: {ref}")
                if kind in ("script", "stylesheet"): external_code.append(f"{page.relative_to(site)}: {kind} {ref}")
                continue                          # external links (Colab, GitHub, arXiv) are not fetched: the site is offline
            target, frag = _target(site, page, ref)
            if not target.exists():
                broken.append(f"{page.relative_to(site)}: {kind} {ref} -> {target.relative_to(site)} missing")
            elif frag and target.suffix == ".html" and frag not in _parse(target).ids and kind == "link":
                anchors.append(f"{page.relative_to(site)}: {ref} (no id {frag!r} in {target.relative_to(site)})")
    print(f"\n{len(pages)} pages, {n} links and images checked")
    assert not broken, f"{len(broken)} broken links or missing files:\n" + "\n".join(broken[:30])
    assert not external_images, "images must be part of the site (it is read offline):\n" + "\n".join(external_images[:20])
    assert not external_code, ("the site must load no script or style sheet from another host (it is read offline; "
                               "vendor it as docs/build.py does MathJax):\n" + "\n".join(external_code[:20]))
    assert not anchors, f"{len(anchors)} links to a missing anchor:\n" + "\n".join(anchors[:30])


def test_every_notebook_page_has_its_outputs_and_colab_link(site):
    sys.path.insert(0, str(ROOT / "docs"))
    import execute
    for nb in execute.notebooks():
        rel = nb.relative_to(ROOT / "nbs").with_suffix("").as_posix()
        page = site / ("index.html" if rel == "index" else f"nbs/{rel}/index.html")
        assert page.exists(), f"no page for {nb.relative_to(ROOT)}"
        text = page.read_text()
        if rel != "index":
            assert "colab.research.google.com/github/" in text and f"/nbs/{rel}.ipynb" in text, f"{page}: no Open in Colab link"
        ran = [c for c in __import__("json").loads(execute.cache_path(nb).read_text())["cells"] if c.get("outputs")]
        if ran: assert "jp-OutputArea-output" in text, f"{page} shows none of its notebook's outputs"
    plots = site / "nbs" / "14_geometry" / "index.html"
    assert plots.read_text().count("data:image/png;base64") >= 1


def _browser(tmp: Path):
    if not (CHROMIUM and CHROMEDRIVER):
        msg = ("chromium and chromium-driver not found: the site's browser test needs them "
               "(apt-get install chromium chromium-driver; .ci/run installs them)")
        if IN_CI: pytest.fail(msg)
        pytest.skip(msg)
    if IN_CI: import selenium  # noqa: F401
    else: pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[dev]')")
    return headless_chromium(tmp, CHROMIUM, CHROMEDRIVER, "1400,1800")


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a): pass


def _wait(what, cond, timeout=30, every=0.25):
    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            v = cond()
            if v: return v
        except Exception: pass
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_site_in_browser(site, tmp_path):
    driver = _browser(tmp_path)
    from selenium.webdriver.common.by import By
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    css = lambda sel: driver.find_elements(By.CSS_SELECTOR, sel)
    t0 = time.time()
    try:
        def images_loaded():
            imgs = css("article img")
            return imgs if imgs and driver.execute_script(
                "return Array.from(document.querySelectorAll('article img')).every(i => i.complete && i.naturalWidth > 0)") else None

        # home: the index notebook, with the navigation to the rest
        driver.get(f"{url}/")
        assert "switch_sae" in _wait("the home page's title", lambda: css("article h1"))[0].text
        nav = " ".join(n.get_attribute("textContent") for n in css("nav"))
        for section in ("Reading order", "The core story", "Further chapters", "Infrastructure you can skip", "Course",
                        "Solutions", "API reference"):
            assert section in nav, f"{section!r} missing from the navigation"

        # a core notebook page: its plots loaded, its printed figures, the Colab link
        driver.get(f"{url}/nbs/14_geometry/")
        imgs = _wait("the plots of 14_geometry to load", images_loaded)
        assert all(driver.execute_script("return arguments[0].naturalWidth", i) > 100 for i in imgs)
        assert css("a.colab-link")[0].get_attribute("href").endswith("/nbs/14_geometry.ipynb")
        assert css(".jp-OutputArea-output pre"), "no printed output on the page"

        # formulas typeset offline by the site's own MathJax: no raw TeX left on the page
        driver.get(f"{url}/nbs/02_losses/")
        _wait("MathJax to typeset 02_losses's formulas", lambda: css("article .MathJax, article .MathJax_Display"), 60)
        assert "\\sum" not in css("article")[0].text, "raw TeX left on the page: MathJax did not typeset it"
        fetched = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert any("/assets/mathjax/" in f for f in fetched), "02_losses did not load the site's own MathJax"
        assert all(f.startswith(url) for f in fetched), f"requests left the site: {[f for f in fetched if not f.startswith(url)]}"

        # the inspector: a static rendering of the widget, its tokens coloured, its plots loaded
        driver.get(f"{url}/nbs/15_inspector/")
        _wait("the inspector's static rendering", lambda: css(".static-widget .ssae-tok"))
        assert "needs a" in css(".static-widget-note")[0].text and "kernel" in css(".static-widget-note")[0].text
        _wait("the inspector's plots", images_loaded)
        assert len(css(".static-widget img")) >= 2

        # a course page: the exercise as the learner gets it, the check's verdict, no solution
        driver.get(f"{url}/nbs/course/01_router_and_topk/")
        body = _wait("the course page", lambda: css("article"))[0].text
        assert "Exercise 1" in body and "YOUR CODE HERE" in body and "✓ route" in body
        assert "probs.max(dim=-1)" not in body, "a course page shows the worked solution"
        driver.get(f"{url}/nbs/course/99_solutions/")
        assert "probs.max(dim=-1)" in _wait("the solutions page", lambda: css("article"))[0].text

        # the API reference: a function's signature and docstring
        driver.get(f"{url}/api/router/")
        body = _wait("the API page", lambda: css("article"))[0].text
        assert "route" in body and "Top-1 routing" in body

        # search, with the theme's own (offline) index
        box = _wait("the search box", lambda: css("input.md-search__input"))[0]
        if not box.is_displayed(): css("label.md-search__icon, label[for='__search']")[0].click()
        _wait("the search box to open", lambda: box.is_displayed(), 10)
        box.send_keys("load balancing")
        hits = _wait("search results", lambda: css(".md-search-result__item"), 30)
        assert any("balanc" in h.text.lower() for h in hits), [h.text[:80] for h in hits[:5]]
        hits[0].find_element(By.CSS_SELECTOR, "a").click()
        _wait("the page of the first result", lambda: css("article h1"))
        driver.save_screenshot(str(tmp_path / "site.png"))
        print(f"\nbrowser checks in {time.time() - t0:.0f} s; screenshot {tmp_path / 'site.png'}")
    except BaseException:
        driver.save_screenshot(str(tmp_path / "failure.png"))
        print(f"\nscreenshot at failure: {tmp_path / 'failure.png'} ({driver.current_url})")
        raise
    finally:
        driver.quit()
        server.shutdown()
