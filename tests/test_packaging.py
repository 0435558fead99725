"""The repository's promises: one dependency list, mirrored; CI runs the README's test command."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")


def pyproject():
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def environment_pip_requirements():
    """The requirement lines of environment.yml's pip section, comments stripped."""
    lines = (REPO / "environment.yml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "- pip:")
    requirements = []
    for line in lines[start + 1:]:
        text = line.split("#", 1)[0].strip()
        if text.startswith("- "):
            requirements.append(text[2:].strip())
    return requirements


def test_environment_yml_mirrors_pyproject_dependencies():
    project = pyproject()["project"]
    declared = list(project["dependencies"])
    for extra in ("notebooks", "dev"):
        declared += project["optional-dependencies"][extra]
    mirrored = [r for r in environment_pip_requirements() if r != "-e ."]
    assert mirrored == declared
    assert "-e ." in environment_pip_requirements()


def test_requirements_are_lower_bounds_so_colab_packages_are_never_downgraded():
    project = pyproject()["project"]
    for requirement in project["dependencies"] + sum(project["optional-dependencies"].values(), []):
        assert ">=" in requirement and not re.search(r"(<|==|~=)", requirement), requirement
    assert "tensorflow>=2.16" in project["dependencies"]
    assert any(r.startswith("keras>=3") for r in project["dependencies"])
    assert "tensorflow[and-cuda]>=2.16" in project["optional-dependencies"]["gpu"]
    assert project["name"] != "helpers"


def test_ci_runs_exactly_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    commands = re.findall(r"^make \w+$", readme, flags=re.MULTILINE)
    assert commands[:2] == ["make run", "make test"], "the quick start is two commands"
    [test_command] = re.findall(r"^The test command \(what CI runs\) is `([^`]+)`\.$", readme, flags=re.MULTILINE)
    ci = [line for line in (REPO / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.startswith("#") and not line.startswith(("set ", "cd "))]
    assert ci == [test_command] == ["make test test-colab"]


def test_makefile_test_target_selects_the_fast_profile():
    result = subprocess.run(["make", "-n", "-W", "pyproject.toml", "test"], cwd=REPO,
                            capture_output=True, text=True, check=True)
    assert "CXR_FAST=1" in result.stdout and "pytest" in result.stdout and "-n 2" in result.stdout
    assert "-m venv .venv" in result.stdout or ".venv/bin/python" in result.stdout


def test_package_runs_as_a_module_without_tensorflow_start_up_lines():
    result = subprocess.run([sys.executable, "-m", "helpers", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "data" in result.stdout and "run" in result.stdout
    for noise in ("port.cc", "cudart_stub", "cuInit", "cpu_feature_guard", "absl::InitializeLog"):
        assert noise not in result.stderr


def test_the_readme_command_line_works_without_activating_the_venv():
    """Typed after `make run`: each command line of the README's block starts with the venv's Python."""
    readme = (REPO / "README.md").read_text()
    block = readme.split("## Command line", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    commands = [line for line in block.splitlines() if line.strip() and not line.startswith(" ")]
    assert commands and all(line.startswith(".venv/bin/python -m helpers ") for line in commands)
