"""A real browser on the real app: headless Chromium (Debian's `chromium`, installed by
.ci/run) driven by Playwright. Open the app, run a short fine-tune, see the loss plot and
the base-vs-tuned metrics, reload (the job survives), ask a question and see two answers,
run a two-scope comparison. Screenshots go to a temporary folder: tests never modify
tracked files (MEDLN_SCREENSHOTS=docs/screenshots refreshes the README's on purpose).
Skipped when Playwright or Chromium is missing.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("MEDLN_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = Path(os.environ.get("MEDLN_SCREENSHOTS") or tempfile.mkdtemp(prefix="medln-screenshots-"))
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1400, "height": 1000}

sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
if not Path(CHROMIUM).is_file():
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(tiny_model, tmp_path_factory):
    from medln.ui import build_app, launch_kwargs, queue

    bundled = REPO / "assets" / "medln-tiny"
    backbone = "medln-tiny" if (bundled / "config.json").is_file() else str(tiny_model("llava"))
    demo = build_app(runs_root=tmp_path_factory.mktemp("browser-runs"), default_backbone=backbone, eval_limit=8)
    queue(demo).launch(server_name="127.0.0.1", server_port=_free_port(), prevent_thread_lock=True, quiet=True,
                       **launch_kwargs(demo))
    yield demo.local_url
    demo.close()


@pytest.fixture(scope="module")
def page(app_url):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        pg = browser.new_page(viewport=VIEWPORT)
        pg.set_default_timeout(60_000)
        pg.goto(app_url)
        pg.wait_for_selector("#ft-start")
        yield pg
        browser.close()


def _shot(pg, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    pg.wait_for_timeout(600)  # let plots finish their transition
    pg.screenshot(path=str(SHOTS / name), full_page=True)


def _wait_text(pg, selector: str, text: str, timeout: float = 60_000) -> None:
    """Wait until the element's rendered text contains `text` (Gradio tables keep hidden
    measuring cells, so `td:has-text()` can match an invisible copy)."""
    pg.wait_for_function("([sel, text]) => (document.querySelector(sel)?.innerText || '').includes(text)",
                         arg=[selector, text], timeout=timeout)


def _textarea_filled(pg, elem_id: str, timeout: float = 90_000) -> str:
    pg.wait_for_function(f"() => (document.querySelector('#{elem_id} textarea')?.value || '').length > 0",
                         timeout=timeout)
    return pg.locator(f"#{elem_id} textarea").input_value()


def test_finetune_then_ask_in_a_browser(page):
    pg = page
    # the parameter table is there before anything loads
    _wait_text(pg, "#ft-params", "ln-vision")
    assert "trains" in pg.locator("#ft-params-summary").inner_text()
    pg.locator("#ft-steps input").fill("8")
    pg.locator("#ft-batch input").fill("4")
    pg.locator("#ft-start").click()
    pg.wait_for_selector("#ft-loss .js-plotly-plot", timeout=120_000)  # the live loss curve
    pg.wait_for_selector("#ft-status .medln-done", timeout=120_000)
    _wait_text(pg, "#ft-metrics", "VQA overall accuracy")
    assert pg.locator("#ft-download").is_visible()
    assert pg.locator("#ft-start").is_enabled() and pg.locator("#ft-stop").is_disabled()
    _shot(pg, "finetune.png")

    pg.reload()  # the job record lives on the server: the page finds it again
    pg.wait_for_selector("#ft-status .medln-done", timeout=30_000)
    pg.wait_for_selector("#ft-loss .js-plotly-plot")

    pg.get_by_role("tab", name="2 · Ask").click()
    pg.locator("#ask-examples img").first.click()
    pg.wait_for_selector("#ask-preview img")
    assert "steps" in pg.locator("#ask-run input").input_value()  # the new run is the tuned one
    pg.locator("#ask-question textarea").fill("What imaging modality is this?")
    pg.locator("#ask-go").click()
    base = _textarea_filled(pg, "ask-base")
    tuned = _textarea_filled(pg, "ask-tuned")
    assert base and tuned
    pg.wait_for_function("() => !document.querySelector('#ask-notice')?.innerText.includes('Generating')")
    assert "not for clinical use" in pg.locator("body").inner_text()
    _shot(pg, "ask.png")


def test_compare_scopes_in_a_browser(page):
    pg = page
    pg.get_by_role("tab", name="3 · Compare scopes").click()
    scopes = pg.locator("#cmp-scopes")
    for name in ("ln-vision", "ln-llm", "attn", "ffn", "full"):
        scopes.get_by_label(name, exact=True).uncheck()
    pg.locator("#cmp-steps input").fill("4")
    pg.locator("#cmp-start").click()
    pg.wait_for_selector("#cmp-status .medln-done", timeout=150_000)
    _wait_text(pg, "#cmp-table", "completed")
    pg.wait_for_selector("#cmp-metric .js-plotly-plot")
    pg.wait_for_selector("#cmp-retention .js-plotly-plot")
    _shot(pg, "compare.png")


def test_errors_show_as_messages_in_the_page(page):
    pg = page
    pg.get_by_role("tab", name="1 · Fine-tune").click()
    backbone = pg.locator("#ft-backbone input")
    backbone.fill("no-such-model")
    backbone.press("Enter")
    _wait_text(pg, "#ft-params-summary", "unknown backbone 'no-such-model'")
    assert pg.locator("#ft-start").is_disabled()
    assert "Traceback" not in pg.locator("body").inner_text()
