"""The ingest bench's simulated fleet is realistic: varied devices, and changes that count."""

from __future__ import annotations

import random

from bench.ingest import apply_change, fleet_documents
from posture_checks.incremental import FactDigests


def test_fleet_devices_differ_and_have_realistic_package_maps():
    docs = fleet_documents(24, seed=3)
    families = {d["os"]["family"] for d in docs}
    assert "linux" in families and len(families) >= 2
    assert len({d["hardware"]["serial"] for d in docs}) == len(docs)
    assert len({FactDigests(d).content() for d in docs}) == len(docs)
    for doc in docs:
        count = doc["packages"]["count"]
        assert count == len(doc["packages"]["installed"])
        low = 700 if doc["os"]["family"] == "linux" else 100
        assert low <= count <= 1500


def test_every_simulated_change_is_a_real_change():
    rng = random.Random(5)
    doc = fleet_documents(1, seed=4)[0]
    for _ in range(40):
        before = FactDigests(doc).content()
        kind = apply_change(doc, rng)
        assert FactDigests(doc).content() != before, kind
