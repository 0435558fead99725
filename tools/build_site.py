"""Build the course website from executed notebooks (`make site`, after `make run`): the README as its home page,
the teacher's page, and one page per notebook with its outputs and figures, never run again.

    python tools/build_site.py [--notebooks outputs/notebooks] [--out site]

Built with MkDocs and mkdocs-jupyter, offline (benchmarks/README.md: why this builder, measured against MyST-NB).
Each notebook page opens with what made it: the data statement and the profile its run printed, so that a phantom
figure is never read as a real one. The pages show no folder of the machine that ran the notebooks: paths in the
repository are written relative to it (`data/phantoms/…`, `outputs/…`), the data and output folders outside it (set by
CXR_DATA_DIR, CXR_OUTPUT_DIR) as `<data>` and `<outputs>`, the temporary folder as `<tmp>`, a home folder as `~`.
Needs no TensorFlow: it reads files only.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK_NAME = re.compile(r"^\d\d_\w+\.ipynb$")


# Outputs whose text is not text: left as they are (a base64 picture could hold "/root" by chance).
BINARY = {"image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp", "application/pdf",
          "attachments", "buffers"}
# Outputs shown as HTML, where a placeholder's angle brackets are written as entities; text is escaped by the renderer.
AS_HTML = {"text/html", "image/svg+xml"}
AS_MARKDOWN = {"text/markdown"}
# Widgets whose value is HTML (the explorers' readouts), in a notebook's saved widget state.
HTML_WIDGETS = {"HTMLModel", "HTMLMathModel"}
# Any home folder, this machine's or another's (/home/name, /Users/name, /root), where no known folder matched first.
ANY_HOME = r"/(?:home|Users)/[^/\s'\"<>`]+|/root"
# A path starts at the start of a word, or right after a terminal colour code (tracebacks: "\x1b[32m/work/…"), or
# after file://; it ends where the folder's name ends.
STARTS = r"(?:(?<![\w.\-/~])|(?<=\dm)|(?<=file://))"
ENDS = r"(?:(?P<slash>/)|(?![\w\-]|\.\w))"


def _absolute_forms(folder) -> list[str]:
    """The folder as written and as resolved (/tmp and /private/tmp on macOS), never "/"."""
    path = Path(folder).expanduser().absolute()
    forms = {str(path), str(path.resolve())}
    return [form for form in forms if form != "/" and len(Path(form).parts) > 1]


def machine_folders(notebooks: Path | None = None, environ=None) -> list[tuple[str, str]]:
    """(this machine's folder, what the site shows instead), longest first, so that the most specific one is used:
    the repository ("": its paths become relative to it), the data and output folders outside it, the temporary
    folder, the home folder. The output folder is CXR_OUTPUT_DIR, and the one holding `notebooks` when that is a
    `notebooks/` folder (`make run` writes them into its output folder's)."""
    environ = os.environ if environ is None else environ
    wanted = [(REPO, ""), (environ.get("CXR_DATA_DIR"), "<data>"), (environ.get("CXR_OUTPUT_DIR"), "<outputs>")]
    if notebooks is not None and Path(notebooks).name == "notebooks":
        wanted.append((Path(notebooks).parent, "<outputs>"))
    wanted += [(tempfile.gettempdir(), "<tmp>"), (environ.get("HOME") or Path.home(), "~")]
    repository = _absolute_forms(REPO)
    folders: dict[str, str] = {}
    for folder, shown in wanted:
        for form in _absolute_forms(folder) if folder else []:
            if shown and any((form + "/").startswith(repo + "/") for repo in repository):
                continue  # in the repository: shown relative to it, as the repository's own paths
            folders.setdefault(form, shown)
    return sorted(folders.items(), key=lambda item: -len(item[0]))


class PathHider:
    """Rewrites this machine's folders in text, as `machine_folders` says: `hide(text, kind)`, kind "text" (escaped
    when shown: stream text, tracebacks, code), "html" or "markdown"."""

    def __init__(self, folders: list[tuple[str, str]]):
        self.shown = [shown for _, shown in folders]
        alternatives = [f"(?P<f{i}>{re.escape(folder)})" for i, (folder, _) in enumerate(folders)]
        self.pattern = re.compile(f"{STARTS}(?:{'|'.join([*alternatives, f'(?P<home>{ANY_HOME})'])}){ENDS}")

    def _replace(self, match: re.Match, kind: str) -> str:
        found = next((i for i in range(len(self.shown)) if match.group(f"f{i}") is not None), None)
        shown = "~" if found is None else self.shown[found]
        slash = match.group("slash") or ""
        if shown == "":  # the repository itself: its paths relative to it
            return "" if slash else "."
        if kind == "html" and shown.startswith("<"):
            shown = html.escape(shown)
        return shown + slash

    def hide(self, text: str, kind: str = "text") -> str:
        if kind != "markdown":
            return self.pattern.sub(lambda match: self._replace(match, kind), text)
        # markdown: angle brackets as entities in prose, as they are in code (`…`, ```…```), where entities show as is
        parts = re.split(r"((?<!`)(`+)(?!`)[\s\S]*?(?<!`)\2(?!`))", text)
        # re.split gives [prose, code, backticks, prose, code, backticks, …]
        return "".join(self.hide(part, "text" if i % 3 == 1 else "html") for i, part in enumerate(parts)
                       if i % 3 != 2)

    def notebook(self, notebook: dict) -> dict:
        """A copy of the notebook with every text rewritten: sources, outputs, saved widget states; pictures kept."""
        return self._walk(notebook, "text")

    def _walk(self, value, kind: str):
        if isinstance(value, str):
            return self.hide(value, kind)
        if isinstance(value, list):
            return [self._walk(item, kind) for item in value]
        if not isinstance(value, dict):
            return value
        walked = {}
        for key, item in value.items():
            if key in BINARY:
                walked[key] = item
                continue
            if (key in ("source", "text") or "/" in key) and isinstance(item, list) and all(
                    isinstance(line, str) for line in item):
                item = "".join(item)  # lines of one text (a code span or fence may run over several)
            if key in AS_HTML:
                walked[key] = self._walk(item, "html")
            elif key in AS_MARKDOWN or (key == "source" and value.get("cell_type") == "markdown"):
                walked[key] = self._walk(item, "markdown")
            elif key == "state" and value.get("model_name") in HTML_WIDGETS and isinstance(item, dict):
                walked[key] = {k: self._walk(v, "html" if k == "value" else kind) for k, v in item.items()}
            else:
                walked[key] = self._walk(item, kind)
        return walked


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
        hider = PathHider(machine_folders(notebooks))
        pages = [("Home", "index.md")]
        readme = home_page((REPO / "README.md").read_text(), [p.name for p in found])
        (docs / "index.md").write_text(hider.hide(readme, "markdown"))
        if (REPO / "docs" / "teaching.md").exists():
            (docs / "teaching.md").write_text(hider.hide((REPO / "docs" / "teaching.md").read_text(), "markdown"))
            pages.append(("For teachers", "teaching.md"))
        for path in found:
            notebook = json.loads(path.read_text())
            (docs / path.name).write_text(json.dumps(hider.notebook(with_banner(notebook))))
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
