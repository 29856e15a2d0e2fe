#!/bin/sh
# Build the Windows installer on Linux with wixl (Debian package: wixl).
#   packaging/windows/build-msi.sh AGENT_EXE VERSION OUT.msi
# AGENT_EXE is the PyInstaller devicetrust-agent.exe built on Windows (PyInstaller
# does not cross-compile); the MSI definition itself is checked here either way.
set -eu
if [ "$#" -ne 3 ]; then
  echo "usage: $0 AGENT_EXE VERSION OUT.msi" >&2
  exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
exe=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
out=$(cd "$(dirname "$3")" && pwd)/$(basename "$3")
command -v wixl >/dev/null || { echo "wixl not found: apt-get install wixl msitools" >&2; exit 1; }
# wixl takes only relative Source paths: build in a scratch directory.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$here/devicetrust-agent.wxs" "$here/agent.toml.example" "$work/"
cp "$exe" "$work/devicetrust-agent.exe"
(cd "$work" && wixl -a x64 -D "Version=$2" -D "AgentExe=devicetrust-agent.exe" \
  -o "$out" devicetrust-agent.wxs)
echo "built $out"
