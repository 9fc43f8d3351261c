"""What the dashboard's tests share: `distilflow ui` started as a user starts it, a headless Chromium driven through
the DevTools protocol by playwright (the installed /usr/bin/chromium, no browser download), plain HTTP requests,
and a workspace filled through the job store's own API."""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from conftest import start_cli

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]
HOSTILE = "<img src=x onerror=alert(1)>"


@dataclass
class Dashboard:
    url: str  # the address printed, token included when there is one
    port: int
    output: list[str]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def token(self) -> str | None:
        found = re.search(r"\?token=(\S+)", self.url)
        return found.group(1) if found else None


@contextmanager
def dashboard(workspace: Path, *args: str, timeout: float = 60) -> Iterator[Dashboard]:
    """`distilflow ui --workspace W --port 0 ARGS` until the block ends; yields once it printed its address."""
    process = start_cli("ui", "--workspace", str(workspace), "--port", "0", *args)
    lines: list[str] = []

    def read() -> None:  # in a thread: a quiet process never blocks the test
        for line in process.stdout:
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + timeout
        while not any(line.startswith("dashboard: ") for line in lines):
            assert process.poll() is None or any(l.startswith("dashboard: ") for l in lines), \
                "distilflow ui exited: " + "".join(lines)
            assert time.monotonic() < deadline, "distilflow ui printed no address: " + "".join(lines)
            time.sleep(0.05)
        url = next(line for line in lines if line.startswith("dashboard: ")).split(" ", 1)[1].strip()
        yield Dashboard(url=url, port=int(re.search(r":(\d+)/", url).group(1)), output=lines)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except Exception:  # noqa: BLE001 - it must not outlive the test
            process.kill()
            process.wait(timeout=15)


def request(url: str, *, method: str = "GET", data: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    """(status, headers, body) of one plain HTTP request; redirects are not followed."""
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(urllib.request.Request(url, data=data, method=method, headers=headers or {}),
                         timeout=30) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read().decode()


@contextmanager
def chromium_page(viewport: tuple[int, int] = (1280, 900)) -> Iterator:
    """A page of a fresh headless Chromium (a new empty profile), with every dialog it opens recorded in
    `page.dialogs` (a script injected by the data would show up there)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
            page.dialogs = []

            def record(dialog) -> None:
                page.dialogs.append(dialog.message)
                dialog.dismiss()

            page.on("dialog", record)
            yield page
        finally:
            browser.close()


def mark_loaded(page) -> None:
    """Set a flag that only survives as long as the page is not reloaded."""
    page.evaluate("() => { window.__sameDocument = true; }")


def still_same_document(page) -> bool:
    return page.evaluate("() => window.__sameDocument === true")


def save_screenshot(page, name: str, folder: Path, full_page: bool = False) -> Path:
    """A screenshot of the page under `folder`; copied to docs/ui/ too when DISTILFLOW_UPDATE_SCREENSHOTS=1 (how
    the documentation's pictures are made)."""
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    if os.environ.get("DISTILFLOW_UPDATE_SCREENSHOTS") == "1":
        docs = Path(__file__).resolve().parents[1] / "docs" / "ui"
        docs.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, docs / path.name)
    return path
