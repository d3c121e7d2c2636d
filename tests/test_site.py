"""The built documentation site, opened in headless Chromium: the index and an API page render
with their title and sidebar, and the equations page's mathematics is typeset by MathJax.

Runs where the site is built (``python -m sphinx -W -b html docs docs/_build/html``) and
Chromium is installed; ``.ci/run`` runs it after building the site.  ``FASTBP_SITE_SCREENSHOT``
names a PNG to save a screenshot of the equations page into.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess

import pytest

SITE = pathlib.Path(__file__).resolve().parents[1] / "docs" / "_build" / "html"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--virtual-time-budget=15000"]


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("Chromium is not installed")


def _page(name: str) -> pathlib.Path:
    page = SITE / name
    if not page.exists():
        pytest.skip(f"the site is not built ({page} is missing): python -m sphinx -W -b html docs docs/_build/html")
    return page


def _dom(page: pathlib.Path, tmp_path, *extra: str) -> str:
    out = subprocess.run([_chromium(), *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *extra, "--dump-dom",
                          page.as_uri()], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def _title(dom: str) -> str:
    m = re.search(r"<title>(.*?)</title>", dom, re.S)
    return m.group(1) if m else ""


def test_index_renders_with_title_and_sidebar(tmp_path):
    dom = _dom(_page("index.html"), tmp_path)
    assert "fastbp" in _title(dom)
    assert 'class="bd-sidebar-primary' in dom  # the theme's navigation sidebar
    assert "The four equations and the kernels" in dom


def test_api_page_renders_the_signature_and_docstring(tmp_path):
    dom = _dom(_page("api/generated/fastbp.MLP.html"), tmp_path)
    assert "fastbp.MLP" in _title(dom)
    assert 'class="bd-sidebar-primary' in dom
    assert re.search(r'id="fastbp\.MLP\.fit"', dom)  # a method's anchor
    assert "loss_and_grad" in dom


def test_equations_are_typeset(tmp_path):
    page = _page("guide/equations.html")
    dom = _dom(page, tmp_path)
    assert "The four equations and the kernels" in _title(dom)
    # MathJax replaces the TeX source with its own elements once it has typeset the page
    assert dom.count("<mjx-container") >= 5, "MathJax did not typeset the equations"
    shot = os.environ.get("FASTBP_SITE_SCREENSHOT")
    if shot:
        subprocess.run([_chromium(), *FLAGS, f"--user-data-dir={tmp_path / 'shot'}", "--window-size=1280,2000",
                        f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120, check=True)
        assert pathlib.Path(shot).stat().st_size > 10_000
