"""A real headless Chromium (Debian's package, installed by the project when missing),
driven from its command line: the page's DOM after its scripts ran, and screenshots."""

from __future__ import annotations

import subprocess
from pathlib import Path

from infra.stack.apt import ensure_debian_package

# Virtual time the page gets for its scripts and requests before the DOM is read.
_SCRIPT_BUDGET_MS = 8000
_TIMEOUT_S = 90


def _chromium(*args: str) -> subprocess.CompletedProcess[str]:
    chromium = ensure_debian_package("chromium", "chromium")
    return subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",  # root, as in CI
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            f"--virtual-time-budget={_SCRIPT_BUDGET_MS}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=_TIMEOUT_S,
        check=False,
    )


def rendered_dom(url: str, *, width: int = 1300, height: int = 800) -> str:
    """The page's DOM once its scripts have run (what a person would see, as HTML)."""
    done = _chromium(f"--window-size={width},{height}", "--dump-dom", url)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def screenshot(url: str, path: Path, *, width: int = 1300, height: int = 800) -> Path:
    """A PNG of the page as Chromium drew it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    done = _chromium(f"--window-size={width},{height}", f"--screenshot={path}", url)
    assert done.returncode == 0, done.stderr[-2000:]
    assert path.is_file(), done.stderr[-2000:]
    return path
