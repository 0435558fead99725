#!/bin/sh
# Prints the Python to build the Colab-versions environment with: the version named in the requirements file's
# "# python: X.Y" line, found on the PATH or under pyenv, else the default Python ($2), said in one line on stderr.
wanted=$(sed -n 's/^# python: //p' "$1")
fallback=${2:-python3}
for candidate in "python$wanted" "$HOME"/.pyenv/versions/"$wanted".*/bin/python"$wanted"; do
    if "$candidate" -c 'import venv' >/dev/null 2>&1; then  # pyenv's shims exist but may not run
        echo "$candidate"
        exit 0
    fi
done
echo "Colab runs Python $wanted; none found here, so the Colab-versions environment uses $($fallback --version 2>&1)." >&2
echo "$fallback"
