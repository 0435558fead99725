"""Which Chrome or Chromium the browser tests drive (tests/test_browser.py, and the website's page in
tests/test_site.py), and what is said when there is none.

Looked for in this order: CXR_CHROMIUM (a path, or a name on the PATH), Debian's /usr/bin/chromium, `chromium`,
`chromium-browser`, `google-chrome` and `google-chrome-stable` on the PATH, then macOS's applications. With none, the
browser tests are skipped, and the test run names them in one line at its end with how to enable them; in CI
(CI=true) they fail instead, so that CI never passes without them.

Standard library only: the Makefile runs it too (`python tests/find_browser.py` prints the browser found, or fails),
to install Debian's Chromium as root with apt-get when there is none.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Mapping, Sequence

VARIABLE = "CXR_CHROMIUM"
DEBIAN = "/usr/bin/chromium"
NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
MACOS = ("/Applications/Google Chrome.app/Contents/MacOS/Google Chrome",
         "/Applications/Chromium.app/Contents/MacOS/Chromium")
HOW_TO_ENABLE = f"install Chromium or Google Chrome, or set {VARIABLE}=/path/to/chrome"
# Every skip's reason starts so: the end-of-run line gathers the tests skipped for it (say_what_was_not_run).
NOT_RUN = "browser test not run"


def _executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def places(environ: Mapping[str, str]) -> list[str]:
    """macOS's applications, system-wide and in the user's own Applications folder."""
    home = environ.get("HOME")
    return [*MACOS, *([os.path.join(home, path.lstrip("/")) for path in MACOS] if home else [])]


def find_browser(environ: Mapping[str, str] | None = None, debian: str | None = None,
                 applications: Sequence[str] | None = None) -> tuple[str | None, str]:
    """(the browser's path, "") or (None, why there is none: one line). `environ` defaults to this process's; `debian`
    and `applications` (macOS's places) default to DEBIAN and `places`: tests point them at fake executables."""
    environ = os.environ if environ is None else environ
    debian = DEBIAN if debian is None else debian
    search_path = environ.get("PATH", "")
    chosen = environ.get(VARIABLE, "").strip()
    if chosen:
        found = shutil.which(chosen, path=search_path) if os.sep not in chosen else os.path.expanduser(chosen)
        if found and _executable(found):
            return found, ""
        return None, f"{VARIABLE}={chosen} is not an executable file"
    if _executable(debian):
        return debian, ""
    for name in NAMES:
        found = shutil.which(name, path=search_path)
        if found:
            return found, ""
    for path in places(environ) if applications is None else applications:
        if _executable(path):
            return path, ""
    return None, f"no Chrome or Chromium found ({debian}, {', '.join(NAMES)} on the PATH, /Applications)"


def in_ci(environ: Mapping[str, str] | None = None) -> bool:
    return (os.environ if environ is None else environ).get("CI", "").strip().lower() in ("true", "1", "yes")


def reason(why: str) -> str:
    """The skip's reason, one line: what was not run, why, and how to enable it."""
    return f"{NOT_RUN}: {why}; to run it, {HOW_TO_ENABLE}"


def browser_or_skip(environ: Mapping[str, str] | None = None, **where) -> str:
    """The browser's path; with none, skips the test (fails it in CI: CI=true), saying how to enable it."""
    import pytest

    path, why = find_browser(environ, **where)
    if path:
        return path
    if in_ci(environ):
        ci = (os.environ if environ is None else environ)["CI"]
        pytest.fail(f"CI={ci} and {why}: CI runs the browser tests (`make test` installs Debian's Chromium as root "
                    f"with apt-get); {HOW_TO_ENABLE}", pytrace=False)
    pytest.skip(reason(why))


def not_run_line(skipped) -> str | None:
    """One line naming the tests skipped for want of a browser, why, and how to enable them (None if there were none).
    `skipped`: pytest's reports of skipped tests (the terminal reporter's stats["skipped"])."""
    why, files = None, {}
    for report in skipped:
        longrepr = getattr(report, "longrepr", None)
        message = longrepr[-1] if isinstance(longrepr, (tuple, list)) and longrepr else str(longrepr or "")
        said = re.search(f"{NOT_RUN}: (.*); to run it, ", message)
        if said:
            why, file = said.group(1), report.nodeid.split("::")[0]
            files[file] = files.get(file, 0) + 1
    if why is None:
        return None
    tests = ", ".join(f"{file} ({count} test{'s' * (count > 1)})" for file, count in files.items())
    return f"Browser tests not run: {tests}: {why}; to run them, {HOW_TO_ENABLE}."


def say_what_was_not_run(terminalreporter) -> None:
    """At the end of the test run (tests/conftest.py's pytest_terminal_summary): the one line of not_run_line."""
    line = not_run_line(terminalreporter.stats.get("skipped", []))
    if line:
        terminalreporter.write_line(line, yellow=True, bold=True)


if __name__ == "__main__":
    found, why = find_browser()
    print(found or why, file=sys.stdout if found else sys.stderr)
    sys.exit(0 if found else 1)
