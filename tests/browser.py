"""A real headless browser for tests: Debian's chromium driven through chromedriver by selenium.

Installs the two Debian packages with apt-get when they are missing and this is root (as the
SLURM tests install SLURM); nothing is downloaded by selenium itself (its driver manager is
bypassed by naming the driver binary).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
PACKAGES = ("chromium", "chromium-driver")


class BrowserUnavailable(RuntimeError):
    """This machine cannot run the browser tests (not root and no chromium, or the install failed)."""


def install() -> None:
    if Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists():
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise BrowserUnavailable(f"Debian's chromium and chromium-driver are needed: `apt-get install {' '.join(PACKAGES)}` as root")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES]):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
        if proc.returncode != 0:
            raise BrowserUnavailable(f"`{' '.join(cmd)}` failed:\n{proc.stderr[-2000:]}")


def start(width: int = 1400, height: int = 1000):
    """A headless chromium whose console messages are kept (``driver.get_log('browser')``)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    install()
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", f"--window-size={width},{height}"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


def artifacts_dir() -> Path:
    """Where browser tests leave screenshots: $LINKSTYLE_TEST_ARTIFACTS, else .test-artifacts/ in the repository."""
    root = Path(os.environ.get("LINKSTYLE_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / ".test-artifacts"))
    root.mkdir(parents=True, exist_ok=True)
    return root
