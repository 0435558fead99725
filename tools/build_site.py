"""Build the course website from executed notebooks (`make site`, after `make run`): the README as its home page,
the teacher's page, and one page per notebook with its outputs and figures, never run again.

    python tools/build_site.py [--notebooks outputs/notebooks] [--out site]

Built with MkDocs and mkdocs-jupyter, offline (benchmarks/README.md: why this builder, measured against MyST-NB).
Each notebook page opens with what made it: the data statement and the profile its run printed, so that a phantom
figure is never read as a real one. Needs no TensorFlow: it reads files only.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK_NAME = re.compile(r"^\d\d_\w+\.ipynb$")


def title_of(notebook: dict) -> str:
    """The notebook's first heading, without its leading number ("03 · Transfer learning …")."""
    for cell in notebook["cells"]:
        if cell["cell_type"] == "markdown":
            for line in "".join(cell["source"]).splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return "notebook"


def made_with(notebook: dict) -> list[str]:
    """What the executed notebook says it ran on: its data statement and its profile line (cells c06 and c04)."""
    said = {}
    for cell in notebook["cells"]:
        if cell.get("id") in ("c04", "c06") and cell["cell_type"] == "code":
            text = "".join("".join(o.get("text", "")) for o in cell.get("outputs", []) if o["output_type"] == "stream")
            said[cell["id"]] = text.splitlines()
    lines = said.get("c06", [])[:1]
    lines += [line.split(":")[0].replace("profile '", "Profile ").replace("'", "") + "."
              for line in said.get("c04", []) if line.startswith("profile ")]  # "profile 'demo' (why): sizes"
    return lines


def with_banner(notebook: dict) -> dict:
    """The notebook with a first cell saying what made its outputs (or that it has none: not executed)."""
    executed = any(cell.get("outputs") for cell in notebook["cells"] if cell["cell_type"] == "code")
    said = made_with(notebook) if executed else []
    if not executed:
        text = "**This notebook was not executed**: run `make run` before `make site` to see its outputs."
    elif said:
        text = "**Outputs as executed, not run again here.** " + " ".join(said)
        text += " Every figure's footer says which images and which backbone weights made it."
    else:
        text = "**Outputs as executed, not run again here.** Every figure's footer says what made it."
    banner = {"cell_type": "markdown", "id": "site-banner", "metadata": {}, "source": f"> {text}\n"}
    return {**notebook, "cells": [banner, *notebook["cells"]]}


def home_page(readme: str, names: list[str]) -> str:
    """The README with its links to notebooks pointed at their pages."""
    for name in names:
        readme = readme.replace(f"(notebooks/{name})", f"({name})")
    return readme.replace("(docs/teaching.md)", "(teaching.md)")


def mkdocs_config(pages: list[tuple[str, str]], site_dir: Path) -> str:
    nav = "\n".join(f"  - {json.dumps(title)}: {page}" for title, page in pages)
    return (f"site_name: Chest X-ray classification with ResNet50\nsite_dir: {json.dumps(str(site_dir))}\n"
            "use_directory_urls: false\ntheme:\n  name: readthedocs\n  navigation_depth: 1\n"
            "plugins:\n  - mkdocs-jupyter:\n      execute: false\n      include_source: true\n"
            "      ignore_h1_titles: true\n"
            f"nav:\n{nav}\n")


def build_site(notebooks: Path, out: Path, log=print) -> list[Path]:
    """Build the site into `out`; returns the notebook pages written."""
    found = sorted(p for p in Path(notebooks).glob("*.ipynb") if NOTEBOOK_NAME.match(p.name))
    if not found:
        raise SystemExit(f"error: no executed notebooks in {notebooks}: run `make run` first (it writes them there)")
    with tempfile.TemporaryDirectory(prefix="cxr-site-") as scratch:
        docs = Path(scratch) / "docs"
        docs.mkdir()
        pages = [("Home", "index.md")]
        (docs / "index.md").write_text(home_page((REPO / "README.md").read_text(), [p.name for p in found]))
        if (REPO / "docs" / "teaching.md").exists():
            shutil.copy(REPO / "docs" / "teaching.md", docs / "teaching.md")
            pages.append(("For teachers", "teaching.md"))
        for path in found:
            notebook = json.loads(path.read_text())
            (docs / path.name).write_text(json.dumps(with_banner(notebook)))
            pages.append((title_of(notebook), path.name))
        config = Path(scratch) / "mkdocs.yml"
        config.write_text(mkdocs_config(pages, Path(out).resolve()))
        done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--quiet", "--config-file", str(config)],
                              capture_output=True, text=True, cwd=scratch)  # its cache (.cache/) goes with scratch
        if done.returncode != 0:
            raise SystemExit(f"error: mkdocs failed: {done.stderr.strip().splitlines()[-1:]}")
    written = [Path(out) / path.with_suffix(".html").name for path in found]
    log(f"Built the course website in {out}: home, {len(written)} notebook pages (open {Path(out) / 'index.html'})")
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--notebooks", type=Path, default=REPO / "outputs" / "notebooks")
    parser.add_argument("--out", type=Path, default=REPO / "site")
    args = parser.parse_args(argv)
    build_site(args.notebooks, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
