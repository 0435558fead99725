"""Maintainer tool: write `requirements/colab.txt`, the packages of Google Colab's runtime that the course meets, pinned
to Colab's own versions, from the list Colab publishes (repository googlecolab/backend-info, file
`pip-freeze.gpu.txt`, and `os-info-gpu.txt` for its Python). `make test-colab` builds an environment from it.

    python tools/colab_requirements.py --freeze pip-freeze.gpu.txt --os-info os-info-gpu.txt --commit SHA
    python tools/colab_requirements.py --check --freeze pip-freeze.gpu.txt   # exit 1 if the file is out of date

Standard library only.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET = REPO / "requirements" / "colab.txt"

# What the course imports (pyproject.toml's dependencies, openpyxl for the dataset's metadata sheets), the kernel and
# widgets a notebook runs in, the tools nbval drives it with where Colab has them, and pip (the setup cell's).
PACKAGES = (
    "tensorflow", "keras", "numpy", "pandas", "pillow", "scikit-learn", "scipy", "matplotlib", "seaborn", "kagglehub",
    "tqdm", "openpyxl", "h5py", "ml_dtypes",
    "ipywidgets", "widgetsnbextension", "jupyterlab_widgets", "ipykernel", "ipython", "jupyter_client",
    "jupyter_core", "traitlets", "tornado", "pyzmq", "notebook", "jupyter_server",
    "nbclient", "nbformat", "pytest",
    "pip",
)
# Not on Colab: the test runner's plugins, at any version that installs beside the pins.
UNPINNED = ("nbval", "pytest-timeout", "pytest-xdist")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(freeze_text: str) -> dict[str, str]:
    """name (canonical) → version, for the `name==version` lines of a pip freeze."""
    found = {}
    for line in freeze_text.splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)", line.strip())
        if match:
            found[canonical(match.group(1))] = match.group(2)
    return found


def python_version(os_info_text: str) -> str:
    """Colab's Python as major.minor ("3.12"), from os-info-gpu.txt's `Python 3.12.13` line."""
    match = re.search(r"^Python (\d+)\.(\d+)", os_info_text, re.M)
    if not match:
        raise SystemExit("error: no 'Python X.Y.Z' line in the os-info file")
    return f"{match.group(1)}.{match.group(2)}"


def requirements(freeze_text: str, python: str, commit: str) -> str:
    found = pins(freeze_text)
    missing = [name for name in PACKAGES if canonical(name) not in found]
    if missing:
        raise SystemExit(f"error: Colab's list has no pin for {', '.join(missing)}: update PACKAGES in {__file__}")
    lines = [
        f"# Colab's GPU runtime, from googlecolab/backend-info commit {commit} (pip-freeze.gpu.txt; Python {python}).",
        "# Refresh: fetch that repository, then `python tools/colab_requirements.py --freeze pip-freeze.gpu.txt "
        "--os-info os-info-gpu.txt --commit SHA`.",
        f"# python: {python}",
        *(f"{canonical(name)}=={found[canonical(name)]}" for name in PACKAGES),
        *UNPINNED,
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--freeze", required=True, help="Colab's pip-freeze.gpu.txt")
    parser.add_argument("--os-info", help="Colab's os-info-gpu.txt (its Python); default: the file's current one")
    parser.add_argument("--commit", help="the backend-info commit both came from; default: the file's current one")
    parser.add_argument("--check", action="store_true", help="only say whether the pins match the freeze")
    args = parser.parse_args(argv)
    current = TARGET.read_text(encoding="utf-8") if TARGET.exists() else ""
    python = (python_version(Path(args.os_info).read_text(encoding="utf-8")) if args.os_info
              else re.search(r"^# python: (\S+)", current, re.M).group(1))
    commit = args.commit or re.search(r"commit (\w+)", current).group(1)
    wanted = requirements(Path(args.freeze).read_text(encoding="utf-8"), python, commit)
    if args.check:
        print("up to date" if wanted == current else f"{TARGET} differs from that list")
        return 0 if wanted == current else 1
    TARGET.parent.mkdir(exist_ok=True)
    TARGET.write_text(wanted, encoding="utf-8")
    print(f"wrote {TARGET.relative_to(REPO)}: Python {python}, {len(PACKAGES)} pins from commit {commit}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
