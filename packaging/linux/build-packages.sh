#!/usr/bin/env bash
# Builds dist/devicetrust-agent_VERSION-RELEASE_ARCH.deb and the matching .rpm
# from the self-contained agent (packaging/linux/build-agent.sh) with nfpm (one
# definition, packaging/linux/nfpm.yaml, for both formats).
#
#   packaging/linux/build-packages.sh              builds the agent first if needed
#   SKIP_AGENT_BUILD=1 ...                         reuse dist/devicetrust-agent as is
#   PKG_VERSION=0.1.1 FORMATS=deb ...              another version, only the .deb
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$ROOT/packaging/linux
BUILD_DIR=${BUILD_DIR:-$ROOT/build/agent}
DIST_DIR=${DIST_DIR:-$ROOT/dist}
FORMATS=${FORMATS:-deb rpm}

say() { echo "build-packages: $*" >&2; }

bundle=$DIST_DIR/devicetrust-agent
if [ "${SKIP_AGENT_BUILD:-}" != 1 ] || [ ! -x "$bundle/devicetrust-agent" ]; then
  BUILD_DIR=$BUILD_DIR DIST_DIR=$DIST_DIR bash "$HERE/build-agent.sh"
fi
nfpm=$BUILD_DIR/venv/bin/nfpm
[ -x "$nfpm" ] || { say "no $nfpm: run packaging/linux/build-agent.sh first"; exit 1; }

# The package's version is the agent's own, unless PKG_VERSION says otherwise.
export PKG_VERSION=${PKG_VERSION:-$(env -i "$bundle/devicetrust-agent" --version | awk '{print $2}')}
export PKG_RELEASE=${PKG_RELEASE:-1}
export PKG_ARCH=${PKG_ARCH:-$(dpkg --print-architecture 2>/dev/null || echo amd64)}
# The newest glibc symbol any bundled binary needs is the package's libc floor.
glibc=$(find "$bundle" -type f \( -name '*.so*' -o -name devicetrust-agent \) -print0 \
        | xargs -0 objdump -T 2>/dev/null | grep -o 'GLIBC_[0-9][0-9.]*' | sort -uV | tail -n1 | cut -d_ -f2)
export PKG_GLIBC=${glibc:-2.17}
export PKG_LIBC_DEPENDS="libc6 (>= $PKG_GLIBC)"
export PKG_MTIME=${PKG_MTIME:-$(git -C "$ROOT" log -1 --format=%cI 2>/dev/null || date -u +%Y-%m-%dT%H:%M:%SZ)}
export BUNDLE_DIR=$bundle PKG_SRC=$HERE DOCS_DIR=$ROOT/docs

# nfpm expands variables in a few fields only: expand them all, failing on any unset.
config=$BUILD_DIR/nfpm.yaml
python3 - "$HERE/nfpm.yaml" "$config" <<'PYEOF'
import os, re, sys
text = open(sys.argv[1]).read()
def value(m):
    if m.group(1) not in os.environ:
        sys.exit(f"build-packages: {m.group(1)} is not set")
    return os.environ[m.group(1)]
open(sys.argv[2], "w").write(re.sub(r"\$\{([A-Z_]+)\}", value, text))
PYEOF
for format in $FORMATS; do
  say "$format: devicetrust-agent $PKG_VERSION-$PKG_RELEASE ($PKG_ARCH, glibc >= $PKG_GLIBC)"
  "$nfpm" package --config "$config" --packager "$format" --target "$DIST_DIR/" >/dev/null
done
ls -1 "$DIST_DIR"/devicetrust-agent[_-]"$PKG_VERSION"*
