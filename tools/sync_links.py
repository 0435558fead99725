"""Maintainer tool: point every Colab badge and notebook setup cell (and the README's badges) at the repository and
branch named in `helpers/config.py` (REPOSITORY, BRANCH). Publishing a fork:

    python tools/sync_links.py --repository OWNER/NAME [--branch BRANCH]   # writes both lines, then every link
    python tools/sync_links.py          # after editing those lines by hand: rewrite the links
    python tools/sync_links.py --check  # only list the files that are out of date (exit 1 if any)

It reads config.py as text and needs no TensorFlow (nor anything outside the standard library).
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "helpers" / "config.py"

COLAB_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"
_COLAB_URL = re.compile(r"https://colab\.research\.google\.com/github/[\w.-]+/[\w.-]+/blob/[\w./-]+?/(?=notebooks/)")
_GIT_URL = re.compile(r"git\+https://github\.com/[\w.-]+/[\w.-]+(?:@[\w./-]+)?")
_NAME = re.compile(r"^[\w.-]+/[\w.-]+$")


def configured(name: str) -> str:
    """A string constant of helpers/config.py, read without importing it (importing helpers starts TensorFlow)."""
    for node in ast.parse(CONFIG.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise SystemExit(f"error: {CONFIG} has no {name} = \"...\" line")


def colab_url(notebook_name: str, repository: str | None = None, branch: str | None = None) -> str:
    repository, branch = repository or configured("REPOSITORY"), branch or configured("BRANCH")
    return f"https://colab.research.google.com/github/{repository}/blob/{branch}/notebooks/{notebook_name}"


def colab_badge(notebook_name: str, repository: str | None = None, branch: str | None = None) -> str:
    return f"[![Open In Colab]({COLAB_BADGE})]({colab_url(notebook_name, repository, branch)})"


def install_url(repository: str | None = None, branch: str | None = None) -> str:
    """What the notebooks' setup cell pip-installs on Colab and Kaggle (CXR_PACKAGE overrides it there)."""
    repository, branch = repository or configured("REPOSITORY"), branch or configured("BRANCH")
    return f"git+https://github.com/{repository}" + ("" if branch == "main" else f"@{branch}")


def linked_files() -> list[Path]:
    return [*sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb")), REPO / "README.md"]


def sync_links(write: bool = True, repository: str | None = None, branch: str | None = None) -> list[Path]:
    """Rewrite the links; returns the files that were (or, with write=False, would be) changed."""
    repository, branch = repository or configured("REPOSITORY"), branch or configured("BRANCH")
    colab = f"https://colab.research.google.com/github/{repository}/blob/{branch}/"
    changed = []
    for path in linked_files():
        text = path.read_text(encoding="utf-8")
        updated = _GIT_URL.sub(install_url(repository, branch), _COLAB_URL.sub(colab, text))
        if updated != text:
            changed.append(path)
            if write:
                path.write_text(updated, encoding="utf-8")
    return changed


def set_constant(name: str, value: str) -> None:
    text = CONFIG.read_text(encoding="utf-8")
    updated, count = re.subn(rf'^{name} = "[^"\n]*"', f'{name} = "{value}"', text, flags=re.MULTILINE)
    if count != 1:
        raise SystemExit(f"error: expected one {name} = \"...\" line in {CONFIG}, found {count}")
    CONFIG.write_text(updated, encoding="utf-8")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only report files that are out of date")
    parser.add_argument("--repository", help="OWNER/NAME on GitHub: written into helpers/config.py first")
    parser.add_argument("--branch", help="the branch the badges open and the setup cell installs (default: main)")
    args = parser.parse_args(argv)
    if args.repository and not _NAME.match(args.repository):
        print(f"error: --repository must be OWNER/NAME, found {args.repository!r}", file=sys.stderr)
        return 2
    if not args.check:
        for name, value in (("REPOSITORY", args.repository), ("BRANCH", args.branch)):
            if value:
                set_constant(name, value)
    changed = sync_links(write=not args.check)
    for path in changed:
        print(f"{'out of date' if args.check else 'updated'}: {path.relative_to(REPO)}")
    where = f"{configured('REPOSITORY')} ({configured('BRANCH')})"
    if args.check and changed:
        print(f"error: links do not point at {where}; run python tools/sync_links.py", file=sys.stderr)
        return 1
    print(f"Colab badges and setup cells point at {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
