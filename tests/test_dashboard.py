"""The static dashboard of the demo SAE (`switch-sae dashboard`, nbs/15a_dashboard), as a reader meets it: written by the
command line, opened from disk in headless Chromium, a page of each kind (overview, expert, latent) reached by clicking
links, the search box used; every link of every page leads to a file that exists, and no request leaves the machine
(Chromium's own network log: every URL the pages asked for is a file:// URL of the site).

Needs Debian's `chromium` and `chromium-driver` and selenium (the dev requirements); skipped without them, except in
CI (CI=true), where a missing browser is an error."""
import json, os, re, shutil, time
from pathlib import Path
import pytest
from conftest import headless_chromium, run_cli
from switch_sae.inspector import demo_dir

DEMO = json.loads((demo_dir() / "cfg.json").read_text())
N, E = DEMO["n_latents"], DEMO["n_experts"]
M = N // E

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def _require_browser():
    missing = [n for n, p in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER)) if not p]
    if missing:
        msg = f"{' and '.join(missing)} not found: apt-get install chromium chromium-driver"
        if os.environ.get("CI") == "true": pytest.fail(msg)
        pytest.skip(msg)
    if os.environ.get("CI") == "true": __import__("selenium")
    else: pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[dev]')")


def _chromium(tmp: Path):
    "Headless Chromium (conftest.headless_chromium) that also records its network log."
    return headless_chromium(tmp, CHROMIUM, CHROMEDRIVER, window="1300,1600", network_log=True)


def _requested(driver) -> list:
    "(document, URL) of each request since the last call (Chromium's Network.requestWillBeSent events)."
    out = []
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg.get("method") == "Network.requestWillBeSent":
            out.append((msg["params"].get("documentURL", ""), msg["params"]["request"]["url"]))
    return out


def broken_links(site: Path) -> list:
    "(page, link) for each link or source of a page of `site` that names no file of the site, or a place elsewhere."
    bad = []
    for page in site.rglob("*.html"):
        for ref in re.findall(r'(?:href|src)="([^"]*)"', page.read_text()):
            target = ref.split("#")[0]
            if re.match(r"[a-z]+:|//", ref) or (target and not (page.parent / target).resolve().is_file()):
                bad.append((str(page.relative_to(site)), ref))
    return bad


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    "The demo SAE's dashboard, as the course website ships it (every latent, the default sample), written by the CLI."
    out = tmp_path_factory.mktemp("dash") / "site"
    t0 = time.time()
    p = run_cli("dashboard", str(demo_dir()), "--out", str(out), "--no-progress")
    print(f"\n{p.stdout.strip()} ({time.time() - t0:.0f} s with the start-up)")
    return out


def test_site_is_complete(site):
    stats = json.loads((site / "dashboard.json").read_text())
    assert stats["tokens"] >= 32768 and stats["experts"] == E and stats["latent_pages"] == N
    assert len(list((site / "latents").glob("*.html"))) == N and len(list((site / "experts").glob("*.html"))) == E
    assert broken_links(site) == []


def test_dashboard_in_browser(site, tmp_path):
    _require_browser()
    from selenium.webdriver.common.by import By
    driver = _chromium(tmp_path)
    css = lambda sel: driver.find_elements(By.CSS_SELECTOR, sel)
    h1 = lambda: css("h1")[0].text
    visited, requests = [], []

    def at(kind):
        visited.append((kind, driver.current_url))
        requests.extend(_requested(driver))
        # every link on the page leads to a page of the site that exists
        for href in driver.execute_script("return Array.from(document.querySelectorAll('a'))"
                                          ".map(a => new URL(a.getAttribute('href'), document.baseURI).href)"):
            assert href.startswith("file://"), href
            assert Path(href[len("file://"):].split("#")[0]).is_file(), f"{kind} page {driver.current_url}: broken link {href}"
    try:
        _requested(driver)          # Chromium's own start-up (its new-tab page, chrome:// URLs): not the site's
        driver.get((site / "index.html").as_uri())
        assert h1().startswith("Switch SAE dashboard")
        assert len(css("svg.ssae-svg")) >= 3, "the load bars, the expert map and the frequency histogram"
        assert len(css("svg.ssae-svg a")) >= 2 * E, "load bars and map rows link to the experts"
        at("overview")

        # an expert, from the overview's table
        css("table a[href='experts/3.html']")[0].click()
        assert h1() == "Expert 3"
        rows = css("table tr[id^='latent-']")
        assert len(rows) == M, "every latent of the expert listed"
        freqs = [float(r.find_elements(By.TAG_NAME, "td")[1].text.rstrip("%")) for r in rows]
        assert freqs == sorted(freqs, reverse=True), "latents sorted by frequency"
        at("expert")

        # its most frequent latent
        first = rows[0].find_element(By.TAG_NAME, "a")
        j = int(first.text.split()[1])
        first.click()
        assert h1() == f"Latent {j}" and j // M == 3
        assert len(css("table.ctxs tr")) >= 5, "top contexts"
        assert css("table.ctxs b.c"), "the strongest token of each context outlined"
        assert css("svg.ssae-svg rect"), "the activation histogram"
        assert len(css("td.up")) == 8 and len(css("td.down")) == 8, "the logit lens"
        at("latent")

        # its nearest direction in another expert, then back to the overview
        link = [a for a in css("table a") if a.text.startswith("latent ")][0]
        k = int(link.text.split()[1])
        link.click()
        assert h1() == f"Latent {k}" and k // M != 3
        at("latent (neighbour)")
        css("nav a")[0].click()
        assert h1().startswith("Switch SAE dashboard")

        # the search box: a latent id, then "expert 5"
        box = css("#ssae-q")[0]
        box.send_keys(str(j))
        hits = css("#ssae-results a")
        assert hits and hits[0].text.startswith(f"latent {j} (expert 3)")
        box.clear(); box.send_keys("expert 5")
        hits = css("#ssae-results a")
        assert len(hits) == 50 and all("(expert 5)" in h.text for h in hits)
        hits[0].click()
        assert re.fullmatch(r"Latent \d+", h1())
        at("latent (search)")
        driver.save_screenshot(str(tmp_path / "dashboard.png"))
        requests.extend(_requested(driver))
    finally:
        driver.quit()
    assert len(visited) == 5
    # the site's pages asked only for files; nothing at all (Chromium's own pages included) went to the network
    assert [(d, u) for d, u in requests if d.startswith("file://") and not u.startswith("file://")] == []
    assert [(d, u) for d, u in requests if re.match(r"(https?|wss?|ftp):", u)] == [], "a request left the machine"
    assert sum(d.startswith("file://") for d, _ in requests) >= 5, "the network log recorded the pages"
