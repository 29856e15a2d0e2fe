#!/usr/bin/env python3
"""Stage the macOS package of the devicetrust agent; on a Mac, build the signed flat .pkg.

    python3 packaging/macos/build.py --executable dist/devicetrust-agent --version 0.1.0 \\
        --out build/macos [--sign "Developer ID Installer: Example (TEAMID)"]

Everywhere it lays out, in ``OUT``:

* ``root/``: the payload tree with the modes the package installs (owners
  root:wheel come from ``pkgbuild --ownership recommended``);
* ``scripts/``: preinstall and postinstall;
* ``resources/`` and ``distribution.xml`` (with this version);
* ``payload.txt``: every path of the payload with its mode, for review.

On macOS it then runs ``pkgbuild`` and ``productbuild`` (and signs when asked).
On Linux it stops there and says so: the flat package needs ``mkbom`` and
``xar``, which Debian does not package (bomutils and xar are not in the
archive; PyPI's "xar" is an unrelated executable-archive format).
"""

from __future__ import annotations

import argparse
import os
import shutil
import stat
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).resolve().parent
IDENTIFIER = "com.devicetrust.agent"
COMPONENT = "devicetrust-agent-component.pkg"
INSTALL_BIN = Path("usr/local/devicetrust/bin/devicetrust-agent")
# Modes of what the payload holds (directories are 0755).
MODES = {
    "Library/LaunchDaemons/com.devicetrust.agent.plist": 0o644,
    "Library/LaunchAgents/com.devicetrust.agent.user-helper.plist": 0o644,
    "Library/Application Support/devicetrust/agent.toml.example": 0o644,
    str(INSTALL_BIN): 0o755,
    "usr/local/devicetrust/bin/devicetrust-uninstall": 0o755,
}


def stage(executable: Path, version: str, out: Path) -> Path:
    """Lay out root/, scripts/, resources/, distribution.xml and payload.txt in ``out``."""
    if out.exists():
        shutil.rmtree(out)
    root = out / "root"
    shutil.copytree(HERE / "root", root)
    target = root / INSTALL_BIN
    target.parent.mkdir(parents=True, exist_ok=True)
    if executable.is_dir():  # a PyInstaller one-folder build: its folder beside bin/
        shutil.copytree(executable, root / "usr/local/devicetrust/lib")
        exe = root / "usr/local/devicetrust/lib" / "devicetrust-agent"
        target.symlink_to(os.path.relpath(exe, target.parent))
    else:
        shutil.copy2(executable, target)
    for dirpath, _dirnames, filenames in os.walk(root):
        os.chmod(dirpath, 0o755)  # noqa: S103 - a payload directory, as installed
        for name in filenames:
            path = Path(dirpath) / name
            if not path.is_symlink():
                os.chmod(path, 0o644)
    for rel, mode in MODES.items():
        path = root / rel
        if not path.is_symlink():
            os.chmod(path, mode)
    shutil.copytree(HERE / "scripts", out / "scripts")
    for script in (out / "scripts").iterdir():
        os.chmod(script, 0o755)  # noqa: S103 - installer scripts are executable
    shutil.copytree(HERE / "resources", out / "resources")
    tree = ET.parse(HERE / "distribution.xml")  # noqa: S314 - our own file
    for ref in tree.getroot().iter("pkg-ref"):
        if ref.get("version") is not None:
            ref.set("version", version)
    tree.write(out / "distribution.xml", encoding="utf-8", xml_declaration=True)
    lines = []
    for path in sorted(root.rglob("*")):
        mode = stat.S_IMODE(path.lstat().st_mode)
        kind = "l" if path.is_symlink() else "d" if path.is_dir() else "f"
        lines.append(f"{kind} {mode:04o} /{path.relative_to(root)}")
    (out / "payload.txt").write_text("\n".join(lines) + "\n")
    return out


def build(out: Path, version: str, sign: str | None) -> Path:
    """pkgbuild + productbuild (macOS only); returns the product archive."""
    component = out / COMPONENT
    subprocess.run(
        ["pkgbuild", "--root", str(out / "root"), "--scripts", str(out / "scripts"),
         "--identifier", IDENTIFIER, "--version", version, "--ownership", "recommended",
         "--install-location", "/", str(component)],
        check=True,
    )  # fmt: skip
    product = out / f"devicetrust-agent-{version}.pkg"
    cmd = ["productbuild", "--distribution", str(out / "distribution.xml"),
           "--resources", str(out / "resources"), "--package-path", str(out)]  # fmt: skip
    if sign:
        cmd += ["--sign", sign]
    subprocess.run([*cmd, str(product)], check=True)
    return product


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--executable", type=Path, required=True)
    parser.add_argument("--version", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--sign", default=None, help="Developer ID Installer identity")
    args = parser.parse_args(argv)
    out = stage(args.executable, args.version, args.out)
    print(f"staged {out} (payload listed in {out / 'payload.txt'})")
    if sys.platform == "darwin" and shutil.which("pkgbuild") and shutil.which("productbuild"):
        print(f"built {build(out, args.version, args.sign)}")
        return 0
    print(
        "not building the flat .pkg: pkgbuild/productbuild run on macOS only, and Debian "
        "packages neither mkbom (bomutils) nor xar. Run this script on a Mac to build it."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
