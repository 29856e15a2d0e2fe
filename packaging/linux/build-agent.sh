#!/usr/bin/env bash
# Builds the self-contained devicetrust-agent executable (PyInstaller, one-dir
# bundle) in a throwaway virtual environment that holds only the `agent` extra and
# the pinned `package` extra (PyInstaller, its hooks, nfpm). Nothing of the server
# (Flask, SQLAlchemy, xmlsec, idp_service) is importable there, and the spec
# excludes it as well, so it cannot end up in the bundle.
#
#   packaging/linux/build-agent.sh            -> dist/devicetrust-agent/devicetrust-agent
#   BUILD_DIR=/tmp/b DIST_DIR=/tmp/d packaging/linux/build-agent.sh
#
# Needs: python3 (>= 3.11, built with --enable-shared, as Debian's and pyenv's are).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PY=${PY:-python3}
BUILD_DIR=${BUILD_DIR:-$ROOT/build/agent}
DIST_DIR=${DIST_DIR:-$ROOT/dist}
VENV=$BUILD_DIR/venv

say() { echo "build-agent: $*" >&2; }

# The pinned packaging tools, read from pyproject.toml's `package` extra.
mapfile -t TOOLS < <("$PY" - "$ROOT/pyproject.toml" <<'PYEOF'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    print("\n".join(tomllib.load(f)["project"]["optional-dependencies"]["package"]))
PYEOF
)

rm -rf "$BUILD_DIR"
mkdir -p "$BUILD_DIR" "$DIST_DIR"
say "throwaway venv in $VENV"
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$ROOT[agent]" "${TOOLS[@]}"

# Proof that the build environment itself is lean: none of the server's packages.
"$VENV/bin/python" - <<'PYEOF'
import importlib.util, sys
present = [m for m in ("flask", "sqlalchemy", "xmlsec", "lxml", "onelogin", "werkzeug")
           if importlib.util.find_spec(m)]
if present:
    sys.exit(f"build-agent: the build venv holds server packages: {present}")
PYEOF

say "PyInstaller $("$VENV/bin/pyinstaller" --version)"
rm -rf "$DIST_DIR/devicetrust-agent"
# The installed copy of the project also holds idp_service, scim and
# posture_checks (one distribution); the agent never imports them, and the
# excludes make sure a stray import fails loudly instead of bloating the bundle.
# setuptools/pkg_resources come in only through the stdlib's distutils shim; with
# them PyInstaller would import pkg_resources at every start (about 10 MB RSS).
"$VENV/bin/pyinstaller" \
  --noconfirm --clean --log-level WARN \
  --onedir --strip \
  --name devicetrust-agent \
  --distpath "$DIST_DIR" \
  --workpath "$BUILD_DIR/work" \
  --specpath "$BUILD_DIR" \
  --collect-submodules agent \
  --collect-submodules trust_protocol \
  --hidden-import _cffi_backend \
  --copy-metadata devicetrust \
  --exclude-module idp_service --exclude-module scim --exclude-module posture_checks \
  --exclude-module flask --exclude-module werkzeug --exclude-module sqlalchemy \
  --exclude-module alembic --exclude-module xmlsec --exclude-module lxml \
  --exclude-module onelogin --exclude-module tkinter --exclude-module pytest \
  --exclude-module setuptools --exclude-module pkg_resources --exclude-module distutils \
  "$ROOT/packaging/linux/agent_entry.py"

exe=$DIST_DIR/devicetrust-agent/devicetrust-agent
env -i "$exe" --version >/dev/null
say "built $exe ($(du -sh "$DIST_DIR/devicetrust-agent" | cut -f1) on disk)"
