"""What the browser test needs, installed once per machine: Chromium and playwright-core.

``browser`` (session fixture) makes sure of:
- Chromium from Debian's packages at ``CHROMIUM`` (``apt-get install chromium`` when missing,
  as root; a browser that a tool downloads itself cannot be fetched here, README.md
  "Dashboard");
- Node.js (``apt-get install nodejs npm`` when missing);
- playwright-core ``PLAYWRIGHT_VERSION`` from the npm registry, installed into a cache
  directory (``$XDG_CACHE_HOME/switchboard-tests``, default ``~/.cache``), found through
  ``NODE_PATH``.
Each install runs under an exclusive file lock, so two test runs on one machine do not
install at once. When something cannot be installed (no apt-get, not root, no registry), the
browser tests are skipped with the reason, except under CI (``CI=true``), where they fail:
CI must run them.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest

CHROMIUM: Final = "/usr/bin/chromium"
# The playwright-core release the page script was written against (tests/dashboard/dashboard_page.cjs).
PLAYWRIGHT_VERSION: Final = "1.65.2"
# An install that takes longer than this is broken (a first apt-get of Chromium takes ~1 min).
INSTALL_TIMEOUT: Final = 900


@dataclass(frozen=True)
class Browser:
    chromium: str
    node: str
    node_path: str


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    path = Path(base) / "switchboard-tests"
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def _locked(name: str) -> Iterator[None]:
    with open(_cache_dir() / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _run(args: list[str], **kwargs: object) -> None:
    done = subprocess.run(args, capture_output=True, text=True, timeout=INSTALL_TIMEOUT, check=False, **kwargs)  # type: ignore[call-overload]
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {(done.stderr or done.stdout)[-800:]}")


def _apt_install(*packages: str) -> None:
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise RuntimeError(f"{', '.join(packages)} missing, and apt-get is not available to this user")
    with _locked("apt"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        _run(["apt-get", "update"], env=env)
        _run(["apt-get", "install", "-y", "--no-install-recommends", *packages], env=env)


def _ensure() -> Browser:
    if not os.path.exists(CHROMIUM):
        _apt_install("chromium")
    if shutil.which("node") is None or shutil.which("npm") is None:
        _apt_install("nodejs", "npm")
    node, npm = shutil.which("node"), shutil.which("npm")
    assert node is not None and npm is not None
    prefix = _cache_dir() / f"playwright-core-{PLAYWRIGHT_VERSION}"
    modules = prefix / "node_modules"
    if not (modules / "playwright-core" / "package.json").exists():
        with _locked("npm"):
            if not (modules / "playwright-core" / "package.json").exists():
                prefix.mkdir(parents=True, exist_ok=True)
                _run(
                    [npm, "install", "--no-save", "--no-audit", "--no-fund", "--prefix", str(prefix),
                     f"playwright-core@{PLAYWRIGHT_VERSION}"],
                    # playwright-core downloads no browser on install; say so all the same.
                    env={**os.environ, "PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD": "1"},
                )
    return Browser(chromium=CHROMIUM, node=node, node_path=str(modules))


@pytest.fixture(scope="session")
def browser() -> Browser:
    try:
        return _ensure()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"the browser test's tools cannot be installed under CI: {exc}")
        pytest.skip(f"no headless Chromium/playwright-core here: {exc}")
