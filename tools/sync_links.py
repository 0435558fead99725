"""Maintainer tool: point every Colab badge and notebook setup cell (and the README's badges) at the repository
named in `helpers/config.py` (REPOSITORY). Run it after changing that line:

    python tools/sync_links.py          # rewrite the files
    python tools/sync_links.py --check  # only list the files that are out of date (exit 1 if any)
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from helpers import config  # noqa: E402

COLAB_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"
_COLAB_URL = re.compile(r"https://colab\.research\.google\.com/github/[\w.-]+/[\w.-]+/blob/main/")
_GIT_URL = re.compile(r"git\+https://github\.com/[\w.-]+/[\w.-]+")


def colab_url(notebook_name: str) -> str:
    return f"https://colab.research.google.com/github/{config.REPOSITORY}/blob/main/notebooks/{notebook_name}"


def colab_badge(notebook_name: str) -> str:
    return f"[![Open In Colab]({COLAB_BADGE})]({colab_url(notebook_name)})"


def install_url() -> str:
    """What the notebooks' setup cell pip-installs on Colab and Kaggle."""
    return f"git+https://github.com/{config.REPOSITORY}"


def linked_files() -> list[Path]:
    return [*sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb")), REPO / "README.md"]


def sync_links(write: bool = True) -> list[Path]:
    """Rewrite the links; returns the files that were (or, with write=False, would be) changed."""
    colab = f"https://colab.research.google.com/github/{config.REPOSITORY}/blob/main/"
    changed = []
    for path in linked_files():
        text = path.read_text(encoding="utf-8")
        updated = _GIT_URL.sub(install_url(), _COLAB_URL.sub(colab, text))
        if updated != text:
            changed.append(path)
            if write:
                path.write_text(updated, encoding="utf-8")
    return changed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only report files that are out of date")
    args = parser.parse_args(argv)
    changed = sync_links(write=not args.check)
    for path in changed:
        print(f"{'out of date' if args.check else 'updated'}: {path.relative_to(REPO)}")
    if args.check and changed:
        print(f"error: links do not point at {config.REPOSITORY}; run python tools/sync_links.py", file=sys.stderr)
        return 1
    print(f"Colab badges and setup cells point at {config.REPOSITORY}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
