"""Headless Chromium and a throw-away JupyterLab server for the browser tests.

Chromium is Debian's ``chromium`` (``/usr/bin/chromium``), driven by Playwright
from PyPI through ``executable_path``; Playwright's own browser download is not
used. :data:`SKIP_REASON` is ``None`` when both are present (or when
``LINQUANT_REQUIRE_BROWSER`` is set, as in CI), else the reason the browser
tests are skipped.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "tests" / "_artifacts"

CHROMIUM = os.environ.get("LINQUANT_CHROMIUM") or shutil.which("chromium") or ""
# Flags for a closed network: no background connections, no first-run, no GPU.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _skip_reason() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed (python -m pip install -e '.[dev]')"
    if not CHROMIUM or not os.access(CHROMIUM, os.X_OK):
        return "Chromium is not installed (Debian: apt-get install chromium)"
    return None


# CI sets LINQUANT_REQUIRE_BROWSER=1: there a missing browser fails the tests instead.
SKIP_REASON = None if os.environ.get("LINQUANT_REQUIRE_BROWSER") else _skip_reason()


@contextlib.contextmanager
def chromium() -> Iterator[object]:
    """A headless Chromium (Playwright ``Browser``) with a fresh profile, closed on exit."""
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="linquant-chromium-") as profile:
        with sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                profile,
                executable_path=CHROMIUM,
                headless=True,
                args=CHROMIUM_ARGS,
                viewport={"width": 1280, "height": 900},
            )
            try:
                yield context
            finally:
                context.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# JupyterLab settings for the test: every cell in the DOM (no virtual scrolling),
# no news or update checks (the network is closed), no autosave races.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": (
        '{"windowingMode": "none"}'
    ),
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": (
        '{"fetchNews": "false", "checkForUpdates": false}'
    ),
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": '{"autosave": false}',
}


@dataclass
class Lab:
    """A running JupyterLab: its base URL, token and notebook folder."""

    url: str
    token: str
    root: Path
    log: Path

    def tree(self, name: str) -> str:
        return f"{self.url}lab/tree/{name}?token={self.token}&reset"

    def api(self, path: str, method: str = "GET") -> bytes:
        req = urllib.request.Request(
            f"{self.url}{path}",
            method=method,
            headers={"Authorization": f"token {self.token}"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.read()

    def shutdown_kernels(self) -> None:
        """Shut every kernel down (sessions closed first), ignoring a server already gone."""
        import json

        with contextlib.suppress(OSError):
            for session in json.loads(self.api("api/sessions")):
                self.api(f"api/sessions/{session['id']}", "DELETE")
            for kernel in json.loads(self.api("api/kernels")):
                self.api(f"api/kernels/{kernel['id']}", "DELETE")


@contextlib.contextmanager
def jupyterlab(root: Path, *, startup_timeout: float = 120.0) -> Iterator[Lab]:
    """JupyterLab serving ``root`` on a free local port with a token.

    Settings, workspaces and runtime files live in a temporary folder, so the
    user's own JupyterLab set-up is neither read nor touched. The kernels and
    the server are stopped on exit, also when the test failed.
    """
    token = secrets.token_hex(16)
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="linquant-lab-") as tmp:
        home = Path(tmp)
        settings = home / "settings"
        for name, text in LAB_SETTINGS.items():
            path = settings / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        env = dict(os.environ)
        env.update(
            JUPYTERLAB_SETTINGS_DIR=str(settings),
            JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"),
            JUPYTER_RUNTIME_DIR=str(home / "runtime"),
            JUPYTER_CONFIG_DIR=str(home / "config"),
            MPLBACKEND="module://matplotlib_inline.backend_inline",
        )
        log = home / "lab.log"
        cmd = [
            sys.executable, "-m", "jupyterlab",
            "--no-browser",
            f"--port={port}",
            "--ip=127.0.0.1",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={root}",
            "--LabApp.news_url=",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.extension_manager=readonly",
        ]  # fmt: skip
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-root")  # CI containers run as root
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        lab = Lab(f"http://127.0.0.1:{port}/", token, root, log)
        try:
            deadline = time.monotonic() + startup_timeout
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"JupyterLab exited at start:\n{log.read_text()[-3000:]}")
                try:
                    lab.api("api/status")
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(
                            f"JupyterLab did not answer in {startup_timeout:.0f} s:\n"
                            f"{log.read_text()[-3000:]}"
                        ) from None
                    time.sleep(0.5)
            yield lab
        finally:
            lab.shutdown_kernels()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
