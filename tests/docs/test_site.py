"""The docs site builds with `mkdocs build --strict`: no broken link or anchor, every
README section on a page, the API reference rendered from the docstrings."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).parents[2]


def _build(root: Path, site: Path) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"NO_MKDOCS_2_WARNING": "1"}  # Material's notice about its successor
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=root, env=env, capture_output=True, text=True, timeout=120,
    )


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    built = _build(REPO, tmp_path / "site")
    assert built.returncode == 0, built.stderr[-3000:]
    operating = (tmp_path / "site" / "operating" / "index.html").read_text()
    assert "Running under systemd" in operating and 'src="../admin-overview.png"' in operating
    # A README link to another page's heading points at that page.
    assert 'href="contributing/#tests"' in (tmp_path / "site" / "index.html").read_text()
    reference = (tmp_path / "site" / "reference" / "index.html").read_text()
    assert "enqueue_many" in reference and "PayloadEncodeError" in reference


def test_a_readme_section_on_no_page_fails_the_build(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    shutil.copytree(REPO / "docs", root / "docs")
    for name in ("mkdocs.yml", "README.md"):
        shutil.copy(REPO / name, root / name)
    (root / "burrow").symlink_to(REPO / "burrow")
    with (root / "README.md").open("a") as readme:
        readme.write("\n## Something new\n\nText no page shows.\n")
    built = _build(root, tmp_path / "site")
    assert built.returncode != 0
    assert "README sections on no page of the site: ['Something new']" in built.stderr
