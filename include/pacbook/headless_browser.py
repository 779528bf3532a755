"""Headless Chromium (Debian's ``chromium``) for report screenshots and the UI browser test.

Chromium here refuses many background connections, so it always starts with the flags of
PITFALLS.md #18 and a fresh profile folder that is removed afterwards.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from include.pacbook import config

CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
)


T = TypeVar("T")


class BrowserUnavailableError(RuntimeError):
    pass


def _require_chromium() -> str:
    executable = config.chromium_executable()
    if not Path(executable).exists() and not shutil.which(executable):
        raise BrowserUnavailableError(
            f"headless Chromium not found at {executable!r}: install Debian's `chromium` and "
            "`chromium-driver` (make does it) or set PACBOOK_CHROMIUM"
        )
    return executable


def screenshot(url: str, png_path: Path, *, width: int = 1400, height: int = 2000, timeout: int = 120) -> Path:
    """Renders ``url`` (``file://`` or ``http://``) and saves a PNG of the first ``height`` pixels."""
    executable = _require_chromium()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    png_path.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="pacbook-chromium-") as profile:
        completed = subprocess.run(
            [
                executable,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                f"--window-size={width},{height}",
                f"--screenshot={png_path}",
                "--virtual-time-budget=5000",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    if completed.returncode != 0 or not png_path.exists() or png_path.stat().st_size == 0:
        raise BrowserUnavailableError(
            f"Chromium could not screenshot {url} (exit {completed.returncode}): {completed.stderr.strip()[-500:]}"
        )
    return png_path


@contextlib.contextmanager
def webdriver_session(*, width: int = 1600, height: int = 1000) -> Iterator[object]:
    """A Selenium WebDriver on headless Chromium through Debian's chromedriver (no driver download)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = _require_chromium()
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--window-size={width},{height}")
    with tempfile.TemporaryDirectory(prefix="pacbook-chromium-") as profile:
        options.add_argument(f"--user-data-dir={profile}")
        driver = webdriver.Chrome(options=options, service=Service(executable_path=config.chromedriver_executable()))
        try:
            yield driver
        finally:
            driver.quit()


def save_evidence(driver, folder: Path, name: str) -> tuple[Path, Path]:
    """Saves what the browser shows now: ``<name>.png`` (screenshot) and ``<name>.html`` (rendered DOM)."""
    folder.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "page"
    png, html = folder / f"{slug}.png", folder / f"{slug}.html"
    driver.save_screenshot(str(png))
    html.write_text(driver.page_source, encoding="utf-8")
    return png, html


def wait_for(
    driver,
    condition: Callable[[Any], T],
    what: str | Callable[[Any], str],
    evidence_dir: Path,
    *,
    timeout: float = 60,
    excerpt: int = 2000,
) -> T:
    """Waits until ``condition(driver)`` returns something truthy and returns it (Selenium's WebDriverWait).

    On timeout it saves a screenshot and the page source under ``evidence_dir`` and fails with ``what`` (or
    ``what(driver)``, computed then, e.g. to name what is missing), the URL, both paths and an excerpt of
    the page's visible text, so a failure can be read without rerunning.
    """
    from selenium.common.exceptions import TimeoutException, WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.5).until(condition)
    except TimeoutException:
        what = what(driver) if callable(what) else what
        png, html = save_evidence(driver, evidence_dir, f"timeout_{what[:80]}")
        try:
            text = driver.find_element(By.TAG_NAME, "body").text
        except WebDriverException as error:
            text = f"<no page text: {error.msg}>"
        raise AssertionError(
            f"{what}: not shown within {timeout:.0f} s at {driver.current_url}\n"
            f"screenshot: {png}\npage source: {html}\npage text (first {excerpt} chars):\n{text[:excerpt]}"
        ) from None
