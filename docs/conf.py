"""Sphinx configuration of fastbp's documentation site.

Build it with ``python -m sphinx -W -b html docs docs/_build/html`` (``pip install -e ".[docs]"``
first).  The gallery runs the scripts of ``examples/`` at build time with small sizes
(``FASTBP_DOCS_BUILD=1``); MathJax is served from the site itself, so pages render offline.
"""

from __future__ import annotations

import os
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "docs" / "_ext"))
os.environ.setdefault("FASTBP_DOCS_BUILD", "1")  # the gallery's examples run at small sizes
# fastbp.cuda's pages import numba-cuda: on its simulator where no GPU is (read when numba loads)
os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import fastbp  # noqa: E402

project = "fastbp"
author = "the fastbp developers"
copyright = "2026, the fastbp developers"  # noqa: A001 - Sphinx's name
release = fastbp.__version__
version = release

extensions = [
    "myst_parser",
    "numpydoc",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # MathJax 3 served from the site: pages render offline
    "sphinx_copybutton",
    "sphinx_gallery.gen_gallery",
    "numba_autodoc",
]
templates_path = ["_templates"]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "auto_examples/*.ipynb", "auto_examples/*.py", "auto_examples/*.zip",
                    "auto_examples/*.md5", "auto_examples/*.codeobj.json", "**/sg_execution_times.rst"]
suppress_warnings = ["config.cache"]  # sphinx-gallery's configuration holds functions
# A cross-reference that does not resolve is a warning (and -W makes it an error), except to
# other projects (no network at build time: no intersphinx inventories) and to fastbp's private
# modules, which have no pages.
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(numpy|numba|scipy|sklearn|mpi4py|torch|jax)(\..*)?"),
    (r"py:.*", r"fastbp\._\w+(\..*)?"),
    (r"py:obj", r"(params|spec|n_layers)"),  # numpydoc's links from an Attributes section to properties
]

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

autosummary_generate = True
autosummary_ignore_module_all = False  # a module's members are its __all__
autodoc_typehints = "none"
numpydoc_show_class_members = False
numpydoc_validation_checks: set[str] = set()
numpydoc_xref_param_type = False

intersphinx_mapping: dict = {}  # no network at build time: cross-links stay inside the site

sphinx_gallery_conf = {
    "examples_dirs": [str(ROOT / "examples")],
    "gallery_dirs": ["auto_examples"],
    "filename_pattern": r"\.py$",
    "download_all_examples": False,
    "remove_config_comments": True,
    "within_subsection_order": "FileNameSortKey",
    "show_memory": False,
    "plot_gallery": "True",
    "matplotlib_animations": False,
}



def _skip_member(app, what, name, obj, skip, options):
    """Leave out what scikit-learn's metadata routing adds to every estimator."""
    if name == "get_metadata_routing" or (name.startswith("set_") and name.endswith("_request")):
        return True
    return None


def setup(app):
    app.connect("autodoc-skip-member", _skip_member)


html_theme = "pydata_sphinx_theme"
html_title = f"fastbp {release}"
html_static_path: list[str] = []
html_theme_options = {
    "navigation_with_keys": False,
    "collapse_navigation": True,  # the sidebar shows the current branch only: a much faster build
    "navigation_depth": 2,
    "show_toc_level": 2,
    "header_links_before_dropdown": 5,
    "secondary_sidebar_items": ["page-toc"],
}
html_sidebars = {"changelog": [], "index": [], "getting-started": []}
html_show_sourcelink = False
