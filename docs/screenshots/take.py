"""The README's screenshots, from a real session with the app's defaults.

    python docs/screenshots/take.py [--out docs/screenshots] [--chromium /usr/bin/chromium]

Starts the app (bundled medln-tiny, default settings, runs in a temporary folder), then in
headless Chromium: a fine-tune with the Fine-tune tab's defaults (ln, 200 steps, 4-bit,
200 items scored per split); the Ask tab on the bundled real chest radiograph with that run
(the demo model's warning beside both answers); a comparison of every scope at the
Compare tab's default budget. Writes finetune.png, ask.png, compare.png (1400 px wide) and
compare-390.png (a phone's width). Takes many minutes on a CPU (the comparison trains every
scope).
"""

from __future__ import annotations

import argparse
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(HERE))
    ap.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    from playwright.sync_api import sync_playwright

    from medln.ui import build_app, launch_kwargs, queue

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    runs = Path(tempfile.mkdtemp(prefix="medln-shots-"))
    demo = build_app(runs_root=runs)
    queue(demo).launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                       **launch_kwargs(demo))
    t0 = time.time()

    def log(msg: str) -> None:
        print(f"[{time.time() - t0:6.0f} s] {msg}", flush=True)

    def shot(pg, name: str) -> None:
        pg.wait_for_timeout(1200)
        pg.screenshot(path=str(out / name), full_page=True)
        log(f"wrote {out / name}")

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, headless=True,
                                    args=["--no-sandbox", "--disable-gpu"])
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        pg.set_default_timeout(3_600_000)
        pg.goto(demo.local_url)
        pg.wait_for_function("() => (document.querySelector('#ft-params')?.innerText || '').includes('ln-vision')")
        pg.wait_for_function("() => (document.querySelector('#ft-estimate')?.innerText || '').includes('Estimated')")
        log("fine-tune with the defaults")
        pg.locator("#ft-start").click()
        pg.wait_for_selector("#ft-status .medln-done")
        pg.wait_for_function("() => (document.querySelector('#ft-metrics')?.innerText || '').includes('VQA overall')")
        shot(pg, "finetune.png")

        pg.get_by_role("tab", name="2 · Ask").click()
        index = pg.evaluate("""() => [...document.querySelectorAll('#ask-examples img')]
            .findIndex(img => (img.getAttribute('src') || '').includes('real-chest_xray_pa'))""")
        pg.locator("#ask-examples img").nth(index).click()
        pg.wait_for_selector("#ask-preview img")
        pg.locator("#ask-question textarea").fill("What imaging modality is this?")
        pg.locator("#ask-go").click()
        pg.wait_for_selector("#ask-tuned-warning .medln-ood")
        pg.wait_for_function("() => (document.querySelector('#ask-tuned textarea')?.value || '').length > 0")
        pg.wait_for_function("() => !document.querySelector('#ask-notice')?.innerText.includes('Generating')")
        shot(pg, "ask.png")

        log("compare all scopes with the defaults")
        pg.get_by_role("tab", name="3 · Compare scopes").click()
        pg.wait_for_function("() => (document.querySelector('#cmp-estimate')?.innerText || '').length > 0")
        pg.locator("#cmp-start").click()
        pg.wait_for_selector("#cmp-status .medln-done")
        pg.wait_for_selector("#cmp-cost .js-plotly-plot")
        shot(pg, "compare.png")
        pg.set_viewport_size({"width": 390, "height": 844})
        pg.wait_for_timeout(1500)
        shot(pg, "compare-390.png")
        browser.close()
    demo.close()
    shutil.rmtree(runs, ignore_errors=True)


if __name__ == "__main__":
    main()
