"""Links from a page to repository files outside ``docs/`` (``../bench/README.md``).

Pages are read on the forge as well as on the site, so they link to the repository's
files by relative path. On the site such a file is not a page: a link to a Markdown file or
a folder outside the manual is rewritten, as the page is read, to its path in code
(``bench/README.md``), and a link to any other file (a plot, a flame graph) stays a link
and is copied to the site as a download, as MyST does for files it does not read.

Also: each section's toctree ends with a glob (``*``) so that a page added to its folder
joins it without an edit; that glob matching nothing is not a mistake, so its warning is
dropped (any other glob, and a page left out of every toctree, still fail the build).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

_LINK = re.compile(r"(?<!!)\[([^\]]+)\]\(([^)\s]+)\)")


def rewrite_outside_links(text: str, page: Path, srcdir: Path) -> str:
    """``text`` with links to Markdown files and folders outside ``srcdir`` as code. Pure
    but for checking whether the target is a folder."""
    repository = srcdir.parent

    def replace(match: re.Match[str]) -> str:
        label, target = match.group(1), match.group(2)
        if "://" in target or target.startswith(("#", "mailto:")):
            return match.group(0)
        resolved = (page.parent / target.split("#", 1)[0]).resolve()
        if resolved.is_relative_to(srcdir) or not resolved.is_relative_to(repository):
            return match.group(0)
        if resolved.is_dir() or resolved.suffix == ".md":
            path = resolved.relative_to(repository).as_posix() + ("/" if resolved.is_dir() else "")
            return label if label.strip("`") == path else f"{label} (`{path}`)"
        return match.group(0)

    return _LINK.sub(replace, text)


class _EmptyStarGlob(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            "didn't match any documents" in str(record.msg) and tuple(record.args or ()) == ("*",)
        )


def _on_source_read(app: Any, docname: str, source: list[str]) -> None:
    srcdir = Path(app.srcdir).resolve()
    page = Path(app.env.doc2path(docname)).resolve()
    source[0] = rewrite_outside_links(source[0], page, srcdir)


def setup(app: Any) -> dict[str, Any]:
    logging.getLogger("sphinx.sphinx.directives.other").addFilter(_EmptyStarGlob())
    app.connect("source-read", _on_source_read)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1"}
