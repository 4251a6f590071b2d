#!/usr/bin/env bash
# The package as a user installs it (a wheel, not editable), run from outside the repository:
# the manifest, paper tables and environments must come with it. Dependencies come from .venv
# (made by `make install`), so nothing is downloaded.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$repo/.venv/bin/pip" wheel -q --no-deps --no-build-isolation -w "$tmp/dist" "$repo"
python3 -m venv "$tmp/venv"
deps=$("$repo/.venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
site=$("$tmp/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$deps" > "$site/harness-deps.pth"  # appended after the venv's own packages: the wheel's harness wins
"$tmp/venv/bin/pip" install -q --no-deps --no-index "$tmp/dist"/harness-*.whl
cd "$tmp"
"$tmp/venv/bin/python" -c "import harness, sys; assert harness.__file__.startswith('$tmp/venv'), harness.__file__"
"$tmp/venv/bin/harness" models > models.txt
grep -q q2l-r101-448 models.txt
"$tmp/venv/bin/harness" data smoke --out smoke --images 8 --train-images 0 > /dev/null
"$tmp/venv/bin/harness" eval q2l-r101-448 --coco-root smoke --weights random --runs runs --workers 0 --no-progress
"$tmp/venv/bin/harness" report --runs runs --format markdown > report.md
grep -q "smoke (random weights" report.md
echo "installed wheel: harness models, eval (smoke) and report ran from $tmp"
