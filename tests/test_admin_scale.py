"""The console at fleet scale: 100,000 devices, every page timed through the real app.

Timings are reported (printed and written to ``test-artifacts/admin-scale-*.txt``),
not asserted: they depend on the machine. The test asserts only that every
page answers 200 at that size. ``DEVICETRUST_ADMIN_SCALE_DEVICES`` changes N.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "admin_console.py"


def _bench():
    spec = importlib.util.spec_from_file_location("admin_console_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_console_pages_at_100k_devices(database_url, artifacts, request):
    devices = int(os.environ.get("DEVICETRUST_ADMIN_SCALE_DEVICES", "100000"))
    report = _bench().run(database_url, devices)
    print("\n" + report)
    backend = request.node.callspec.params["database_url"]
    (artifacts / f"admin-scale-{backend}.txt").write_text(report + "\n")
