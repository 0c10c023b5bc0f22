"""MkDocs hook: the site's pages are made of the README's sections, so they never disagree.

The README is the manual and must read whole on a repository page; the site cuts it
into pages. A page in docs/ names the README sections it shows with a marker line,
``<!-- readme: Quick start -->`` (``intro`` is the text above the first section). On
the way, links that would change meaning are rewritten: ``#anchor`` to the page that
now holds that heading, ``docs/x`` to ``x``, and a link to a file outside docs/
(``examples/``, ``LICENSE``) to its plain text, as the site does not carry those
files. A README section that no page shows fails the build, so a new section
cannot be left off the site.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from markdown.extensions.toc import slugify
from mkdocs.exceptions import PluginError

MARKER = re.compile(r"^<!-- readme: (.+?) -->$", re.M)
LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")
FENCE = re.compile(r"(^```.*?^```)", re.S | re.M)
HEADING = re.compile(r"^#{2,6} (.+)$", re.M)

_sections: dict[str, str] = {}
_anchor_pages: dict[str, str] = {}
_shown: set[str] = set()


def _split(readme: str) -> dict[str, str]:
    """The README's level-2 sections by title, and its intro (less the H1 title)."""
    parts = re.split(r"^(?=## )", readme, flags=re.M)
    sections = {"intro": re.sub(r"\A# .*\n", "", parts[0]).strip() + "\n"}
    for part in parts[1:]:
        sections[part.splitlines()[0][3:].strip()] = part
    return sections


def _slug(title: str) -> str:
    return slugify(re.sub(r"[`*]", "", title), "-")


def on_config(config: Any) -> Any:
    docs = Path(config["docs_dir"])
    _sections.clear()
    _sections.update(_split((docs.parent / "README.md").read_text()))
    _anchor_pages.clear()
    _shown.clear()
    for page in sorted(docs.glob("*.md")):
        for title in MARKER.findall(page.read_text()):
            if title not in _sections:
                raise PluginError(f"{page.name}: the README has no section {title!r}")
            for heading in HEADING.findall(_sections[title]):
                _anchor_pages.setdefault(_slug(heading), page.name)
    return config


def _rewrite_links(text: str, page: str) -> str:
    def link(match: re.Match[str]) -> str:
        bang, label, target = match.groups()
        if target.startswith(("http://", "https://", "mailto:")):
            return match.group(0)
        if target.startswith("#"):
            owner = _anchor_pages.get(target[1:], page)
            return match.group(0) if owner == page else f"{bang}[{label}]({owner}{target})"
        if target.startswith("docs/"):
            return f"{bang}[{label}]({target.removeprefix('docs/')})"
        return label  # a file of the repository that the site does not carry

    return "".join(part if FENCE.fullmatch(part) else LINK.sub(link, part) for part in FENCE.split(text))


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    name = page.file.src_uri

    def section(match: re.Match[str]) -> str:
        _shown.add(match.group(1))
        return _rewrite_links(_sections[match.group(1)], name)

    return MARKER.sub(section, markdown)


def on_post_build(config: Any) -> None:
    missing = [title for title in _sections if title not in _shown]
    if missing:
        raise PluginError(f"README sections on no page of the site: {missing}; add a <!-- readme: ... --> marker")
