"""Drive the real `gafi-opt dashboard` in headless Chromium: what tests/test_dashboard.py checks,
and the screenshots in docs/.

Uses Debian's `chromium` (/usr/bin/chromium, installed by .ci/services.sh) through the
`playwright` package's `executable_path`; no browser is downloaded.

    .venv/bin/python tests/dashboard_browser.py --storage sqlite:///runs/digits/gafi.db --pipeline digits --out docs
"""

from __future__ import annotations

import argparse
import contextlib
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import optuna

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
GAFI_OPT = Path(sys.executable).with_name("gafi-opt")
URL_LINE = re.compile(r"optuna-dashboard on (http://\S+/dashboard/)")
VIEWPORT = {"width": 1400, "height": 1700}  # tall enough for the study page's key figure
TRIAL_HEIGHT = 1400  # the trial page, unscrolled: note, attributes and the artifact card
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@contextlib.contextmanager
def dashboard_server(storage_url: str, log_path: Path, artifacts: str | None = None, timeout: float = 120.0):
    """Start `gafi-opt dashboard --port 0` on 127.0.0.1; yields its base URL (http://127.0.0.1:PORT)."""
    command = [str(GAFI_OPT), "dashboard", "--storage", storage_url, "--host", "127.0.0.1", "--port", "0"]
    if artifacts:
        command += ["--artifacts", artifacts]
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while True:
            match = URL_LINE.search(log_path.read_text())
            if match:
                yield match.group(1).removesuffix("/dashboard/")
                return
            if process.poll() is not None:
                raise RuntimeError(f"gafi-opt dashboard exited with {process.returncode}:\n{log_path.read_text()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"gafi-opt dashboard printed no URL in {timeout:.0f} s:\n{log_path.read_text()}")
            time.sleep(0.2)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class PageReport:
    """What the browser saw."""

    figure_title_found: bool = False
    trial_items: list[str] = field(default_factory=list)
    note_text: str = ""
    artifact_status: int | None = None
    artifact_content_type: str | None = None
    artifact_bytes: bytes = b""
    image_natural_size: tuple[int, int] = (0, 0)
    console_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)


def study_id(storage_url: str, study_name: str) -> int:
    from gafi_opt.storages import open_storage

    return optuna.load_study(study_name=study_name, storage=open_storage(storage_url))._study_id


def inspect(base_url: str, sid: int, trial_number: int, figure_title: str, screenshots: Path | None = None, scale: float = 1.0) -> PageReport:
    """Open the stage study, its trial list and one trial; screenshots go to `screenshots` if given."""
    from playwright.sync_api import sync_playwright

    report = PageReport()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT, device_scale_factor=scale)
            page.on("console", lambda msg: report.console_errors.append(msg.text) if msg.type == "error" else None)
            page.on("pageerror", lambda exc: report.console_errors.append(f"uncaught: {exc}"))
            page.on("response", lambda r: report.failed_requests.append(f"{r.status} {r.url}") if r.status >= 400 else None)
            page.on("requestfailed", lambda r: report.failed_requests.append(f"failed {r.url}: {r.failure}"))

            # The study page: charts and, below them, the stage's key figure saved on the study.
            page.goto(f"{base_url}/dashboard/studies/{sid}", wait_until="networkidle")
            title = page.get_by_text(figure_title).first
            title.wait_for(state="attached", timeout=30_000)
            report.figure_title_found = True
            page.wait_for_timeout(1000)  # plotly's transitions
            if screenshots:
                page.screenshot(path=str(screenshots / "dashboard-study.png"))

            # The trial list of the study.
            page.goto(f"{base_url}/dashboard/studies/{sid}/trials", wait_until="networkidle")
            page.get_by_text(re.compile(r"^Trial \d+$")).first.wait_for(timeout=30_000)
            report.trial_items = page.get_by_text(re.compile(r"^Trial \d+$")).all_inner_texts()

            # One trial: its note and its sample grid, fetched from the artifact store.
            page.set_viewport_size({"width": VIEWPORT["width"], "height": TRIAL_HEIGHT})
            with page.expect_response(lambda r: "/artifacts/" in r.url, timeout=30_000) as artifact:
                page.goto(f"{base_url}/dashboard/studies/{sid}/trials?numbers={trial_number}", wait_until="networkidle")
            response = artifact.value
            report.artifact_status = response.status
            report.artifact_content_type = response.headers.get("content-type")
            report.artifact_bytes = response.body()
            image = page.locator("img[src*='/artifacts/']").first
            image.wait_for(timeout=30_000)
            page.wait_for_function(
                "() => [...document.images].some(i => i.src.includes('/artifacts/') && i.complete && i.naturalWidth > 0)", timeout=30_000
            )
            report.image_natural_size = tuple(image.evaluate("i => [i.naturalWidth, i.naturalHeight]"))
            report.note_text = page.get_by_text(re.compile(r"stage, trial \d+")).first.inner_text()
            if screenshots:
                page.screenshot(path=str(screenshots / "dashboard-trial.png"))
        finally:
            browser.close()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description="Screenshots of a pipeline's dashboard (study page and one trial) and the trial's sample grid.")
    parser.add_argument("--storage", required=True)
    parser.add_argument("--pipeline", required=True)
    parser.add_argument("--stage", default="checkpoint")
    parser.add_argument("--trial", type=int, default=None, help="Trial number (default: the stage's best).")
    parser.add_argument("--out", default="docs")
    parser.add_argument("--scale", type=float, default=1.0, help="Device pixel ratio of the screenshots.")
    args = parser.parse_args()

    from gafi_opt.pipeline import Pipeline

    pipeline = Pipeline.load(args.storage, args.pipeline)
    trial = args.trial if args.trial is not None else pipeline.best_trial(args.stage).number
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sid = study_id(args.storage, pipeline.study_name(args.stage))
    with dashboard_server(args.storage, out / ".dashboard.log") as base:
        report = inspect(base, sid, trial, f"{args.pipeline} / {args.stage}: CAS against", screenshots=out, scale=args.scale)
    (out / ".dashboard.log").unlink()
    (out / f"{args.pipeline}-samples.png").write_bytes(report.artifact_bytes)  # the grid at full size
    print(f"trials {len(report.trial_items)}, artifact {report.artifact_status} {report.artifact_content_type} "
          f"{len(report.artifact_bytes)} bytes, console errors {report.console_errors}, failed {report.failed_requests}")


if __name__ == "__main__":
    main()
