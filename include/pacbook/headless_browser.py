"""Headless Chromium (Debian's ``chromium``) for report screenshots and the UI browser test.

Chromium here refuses many background connections, so it always starts with the flags of
PITFALLS.md #18 and a fresh profile folder that is removed afterwards.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

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
