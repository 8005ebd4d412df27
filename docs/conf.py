"""Sphinx configuration of the manual (``make docs``).

The reference pages (CLI, settings, metrics) are written from the code at every build by
``_ext/reference_pages.py``; the Python API comes from docstrings (autodoc). The build
runs with warnings as errors and nitpicky references (``make docs``), so a broken link,
a missing heading anchor or a reference to something that does not exist fails it.
"""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path[:0] = [str(DOCS / "_ext"), str(DOCS.parent)]

project = "VoxPersona consumer"
author = "VoxPersona"
copyright = "VoxPersona"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "reference_pages",
    "repository_links",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
# Fragments included into other pages (the CLI verbs' notes, generated tables), not pages
# of their own.
exclude_patterns = ["_build", "_generated", "reference/cli/*.md"]

# --- MyST -----------------------------------------------------------------------------
myst_enable_extensions = ["colon_fence", "deflist"]
# Every heading down to ### gets an anchor, so `page.md#a-heading` links are checked.
myst_heading_anchors = 3

# --- strictness -------------------------------------------------------------------------
nitpicky = True
# Each section's toctree ends with a glob (*) so that a page added to its folder joins it
# without an edit here; an empty glob is not a mistake. A page left out of every toctree
# still fails the build.
suppress_warnings = ["toc.empty_glob"]
# Without network access there is no intersphinx inventory of the standard library or of
# the dependencies, so references to types outside this package cannot be resolved; the
# package's own (consumer.*) stay checked.
nitpick_ignore_regex = [
    (r"py:.*", r"(?!consumer\.).*"),
]

# --- autodoc ----------------------------------------------------------------------------
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_default_options = {"members": True, "undoc-members": False}

# --- HTML -------------------------------------------------------------------------------
# `--json` stays two hyphens, quotes stay straight: the pages quote commands and output.
smartquotes = False

html_theme = "furo"
html_title = "VoxPersona consumer"
html_static_path: list[str] = []
