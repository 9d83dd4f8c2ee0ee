"""End to end, as a learner would: JupyterLab (headless, localhost) serves the inspector notebook, Chromium
opens it, runs all cells, changes controls of the widget and sees the view change. A screenshot is saved.

Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them) and the dev requirements
(jupyterlab, ipywidgets, selenium). Without the browser it is skipped, except in CI (CI=true), where a
missing browser is an error: CI must run this test, not skip it."""
import os, re, secrets, shutil, signal, socket, subprocess, sys, time, urllib.request
from pathlib import Path
import pytest
from conftest import headless_chromium

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "nbs" / "15_inspector.ipynb"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def _require_browser():
    missing = [n for n, p in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER)) if not p]
    if missing:
        msg = (f"{' and '.join(missing)} not found: the browser test needs Debian's chromium and chromium-driver "
               "(apt-get install chromium chromium-driver; .ci/run installs them)")
        if os.environ.get("CI") == "true": pytest.fail(msg)
        pytest.skip(msg)
    for mod in ("jupyterlab", "ipywidgets", "selenium"):
        if os.environ.get("CI") == "true": __import__(mod)
        else: pytest.importorskip(mod, reason=f"{mod} is not installed (pip install -e '.[dev]')")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(what, cond, timeout, every=0.5):
    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            v = cond()
            if v: return v
        except Exception:
            pass
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _start_lab(tmp: Path):
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp / "cfg"), "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
           "IPYTHONDIR": str(tmp / "ipython"), "JUPYTER_PLATFORM_DIRS": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.open_browser=False",
           "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp / 'work'}",
           "--ServerApp.terminals_enabled=False", "--LabApp.news_url=None", "--LabApp.extension_manager=readonly",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
           f"--LabApp.workspaces_dir={tmp / 'workspaces'}", f"--LabApp.user_settings_dir={tmp / 'settings'}"]
    if hasattr(os, "geteuid") and os.geteuid() == 0: cmd.append("--allow-root")   # CI runs as root
    news = tmp / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True)
    news.write_text('{"fetchNews": "false"}')   # no "get notified about Jupyter news?" toast, no request for it
    log = open(tmp / "jupyterlab.log", "w")
    proc = subprocess.Popen(cmd, cwd=tmp / "work", env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def up():
        if proc.poll() is not None:
            raise AssertionError(f"JupyterLab exited ({proc.returncode}):\n{(tmp / 'jupyterlab.log').read_text()[-3000:]}")
        try: return urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2).status == 200
        except OSError: return False
    t0 = time.time()
    while not up():
        if time.time() - t0 > 90: raise AssertionError("JupyterLab did not start in 90 s:\n" + (tmp / "jupyterlab.log").read_text()[-3000:])
        time.sleep(0.5)
    return proc, url, token


def _stop(proc):
    if proc.poll() is not None: return
    try: os.killpg(proc.pid, signal.SIGTERM)   # the server and the kernel it started (its own session)
    except ProcessLookupError: return
    try: proc.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL); proc.wait(5)


def _browser(tmp: Path):
    return headless_chromium(tmp, CHROMIUM, CHROMEDRIVER, "1500,1900")


def test_inspector_notebook_in_browser(tmp_path):
    _require_browser()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select
    t_start = time.time()
    (tmp_path / "work").mkdir()
    shutil.copy(NOTEBOOK, tmp_path / "work" / "inspector.ipynb")   # a copy: the browser's saves never touch nbs/
    proc, url, token = _start_lab(tmp_path)
    driver = None
    try:
        driver = _browser(tmp_path)
        driver.get(f"{url}/lab/tree/inspector.ipynb?reset&token={token}")
        css = lambda sel: driver.find_elements(By.CSS_SELECTOR, sel)
        _wait("the notebook", lambda: css(".jp-Notebook .jp-Cell"), 120)
        # The notebooks carry no kernelspec (nbdev_clean), so JupyterLab may ask for a kernel: accept its choice.
        def accept_kernel():
            for d in css(".jp-Dialog"):
                if "Select Kernel" in d.text: d.find_element(By.CSS_SELECTOR, ".jp-mod-accept").click()
        def kernel_ready():
            accept_kernel()
            return ([k for k in css(".jp-NotebookPanel .jp-KernelName") if "Python" in k.text]
                    and css('.jp-NotebookPanel .jp-Notebook-ExecutionIndicator[data-status="idle"]') and not css(".jp-Dialog"))
        _wait("an idle Python kernel", kernel_ready, 120)

        # Run all cells through the menu, as a person would: Run > Run All Cells.
        def run_all():   # retried while a dialog (the kernel being chosen) covers the menu
            accept_kernel()
            [m for m in css(".lm-MenuBar-item") if m.text.strip() == "Run"][0].click()
            _wait("Run All Cells", lambda: [i for i in css(".lm-Menu-item") if i.text.startswith("Run All Cells")], 5)[0].click()
            return True
        _wait("Run > Run All Cells", run_all, 60, every=1)

        # The inspector appears when the last cell has run.
        panel = _wait("the inspector widget", lambda: css(".ssae-inspector .ssae-expert h4"), 180)[0]
        _wait("the kernel to finish", lambda: css('.jp-NotebookPanel .jp-Notebook-ExecutionIndicator[data-status="idle"]'), 60)
        errors = [e.text[:500] for e in css(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
                  if "Traceback" in e.text or "Error" in e.text]
        assert not errors, f"a cell failed in the browser:\n{errors[0]}"
        n_prompts = [p.text for p in css(".jp-InputArea-prompt")]
        assert not any(p.strip() in ("[*]:", "[ ]:") for p in n_prompts if p.strip()), "cells were not all run"

        root = css(".ssae-inspector")[0]
        driver.execute_script("arguments[0].scrollIntoView({block: 'start'})", root)
        n_tokens = len(css(".ssae-inspector .ssae-tok"))
        assert n_tokens > 20, f"expected the text's tokens coloured by expert, found {n_tokens} tokens"
        tip = css(".ssae-inspector .ssae-tok")[0].get_attribute("title")
        assert re.search(r"expert \d+, router p = [01]\.\d\d", tip), tip

        # 1. Choose another expert in the dropdown: the expert panel, the latent panel and the plots follow.
        before = dict(expert=panel.text, latent=css(".ssae-latent h4")[0].text,
                      img=[i.get_attribute("src") for i in css(".ssae-inspector img")])
        select = Select(css(".ssae-expert-pick select")[0])
        current = select.first_selected_option.text
        new = next(o.text for o in select.options if o.text != current)
        new_id = int(re.match(r"expert (\d+)", new).group(1))
        select.select_by_visible_text(new)
        _wait(f"the expert panel to show expert {new_id}",
              lambda: css(".ssae-expert h4")[0].text.strip() == f"Expert {new_id}", 30)
        _wait("the latent panel to follow", lambda: css(".ssae-latent h4")[0].text != before["latent"], 30)
        assert f"(expert {new_id})" in css(".ssae-latent h4")[0].text
        _wait("new plots", lambda: [i.get_attribute("src") for i in css(".ssae-inspector img")] != before["img"], 30)
        assert css(".ssae-expert")[0].text != before["expert"]

        # 2. Type a text of our own: the coloured tokens follow when the box loses focus.
        box = css(".ssae-text-box textarea")[0]
        box.click(); box.send_keys(Keys.CONTROL, "a"); box.send_keys("import os")
        css(".ssae-status")[0].click()
        ActionChains(driver).move_to_element(css(".ssae-tokens")[0]).click().perform()
        _wait("the new text's 9 tokens", lambda: len(css(".ssae-inspector .ssae-tok")) == 9, 30)
        assert "".join(t.text for t in css(".ssae-inspector .ssae-tok")).replace("\u00a0", " ") == "import os"

        driver.execute_script("arguments[0].scrollIntoView({block: 'start'})", root)
        shot = tmp_path / "inspector.png"
        driver.save_screenshot(str(shot))
        root.screenshot(str(tmp_path / "inspector_widget.png"))
        print(f"\nscreenshots: {shot} and {tmp_path / 'inspector_widget.png'} ({time.time() - t_start:.0f} s)")
        assert shot.stat().st_size > 10_000
    except BaseException:
        if driver is not None:
            driver.save_screenshot(str(tmp_path / "failure.png"))
            print(f"\nscreenshot at failure: {tmp_path / 'failure.png'}; dialogs: {[d.text for d in css('.jp-Dialog')]}")
        raise
    finally:
        if driver is not None: driver.quit()
        _stop(proc)
