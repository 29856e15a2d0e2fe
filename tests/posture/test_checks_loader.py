"""The catalog loader: built-in plus directories, overrides, hot reload, last good on errors."""

from __future__ import annotations

import os
import time

from posture_checks.loader import BUILTIN_DIR, CatalogLoader

CHECK = """\
id: {id}
title: {title}
description: d
platforms: [linux]
severity: low
expression: firewall.enabled
enforcement: report_only
max_fact_age: 1h
remediation: r
"""


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def write(path, text, bump=0):
    path.write_text(text)
    # Make the change visible even on filesystems with coarse mtimes.
    stamp = time.time() + bump
    os.utime(path, (stamp, stamp))


def test_builtin_plus_team_directory_with_override(tmp_path):
    write(tmp_path / "mine.yaml", CHECK.format(id="team-check", title="Mine"))
    write(tmp_path / "fw.yaml", CHECK.format(id="firewall", title="Team firewall"))
    catalog = CatalogLoader([tmp_path]).current()
    builtin = CatalogLoader(include_builtin=True).current()
    assert "team-check" in catalog.ids()
    assert catalog.by_id("firewall").title == "Team firewall"  # the team's version wins
    assert len(catalog.checks) == len(builtin.checks) + 1
    assert all(c.source.startswith(str(BUILTIN_DIR)) for c in builtin.checks)


def test_unchanged_files_are_not_reread(tmp_path):
    write(tmp_path / "a.yaml", CHECK.format(id="a", title="A"))
    clock = Clock()
    loader = CatalogLoader([tmp_path], include_builtin=False, min_interval=1.0, clock=clock)
    first = loader.current()
    for _ in range(5):
        clock.now += 2
        assert loader.current() is first
    assert loader.reloads == 1


def test_changes_reload_after_the_interval(tmp_path):
    path = tmp_path / "a.yaml"
    write(path, CHECK.format(id="a", title="Old"))
    clock = Clock()
    loader = CatalogLoader([tmp_path], include_builtin=False, min_interval=1.0, clock=clock)
    assert loader.current().by_id("a").title == "Old"
    write(path, CHECK.format(id="a", title="New"), bump=5)
    assert loader.current().by_id("a").title == "Old"  # within the interval: no stat pass
    clock.now += 1.5
    catalog = loader.current()
    assert catalog.by_id("a").title == "New"
    assert catalog.generation == 2
    write(tmp_path / "b.yaml", CHECK.format(id="b", title="B"), bump=6)
    clock.now += 1.5
    assert loader.current().ids() == ["a", "b"]
    (tmp_path / "b.yaml").unlink()
    clock.now += 1.5
    assert loader.current().ids() == ["a"]


def test_a_broken_file_keeps_the_last_good_catalog(tmp_path):
    path = tmp_path / "a.yaml"
    write(path, CHECK.format(id="a", title="Good"))
    clock = Clock()
    loader = CatalogLoader([tmp_path], include_builtin=False, min_interval=0, clock=clock)
    good = loader.current()
    write(path, "id: a\ntitle: [broken\n", bump=5)
    clock.now += 1
    assert loader.current() is good
    assert loader.errors and loader.errors[0].source == str(path)
    write(path, CHECK.format(id="a", title="Fixed"), bump=10)
    clock.now += 1
    assert loader.current().by_id("a").title == "Fixed"
    assert loader.errors == []


def test_first_load_with_errors_keeps_the_valid_checks(tmp_path):
    write(tmp_path / "a.yaml", CHECK.format(id="a", title="A"))
    write(tmp_path / "bad.yaml", "id: [\n")
    loader = CatalogLoader([tmp_path], include_builtin=False)
    assert loader.current().ids() == ["a"]
    assert [i.source for i in loader.errors] == [str(tmp_path / "bad.yaml")]


def test_current_is_cheap_when_nothing_changed():
    loader = CatalogLoader(min_interval=0)  # stat every call: the worst case
    loader.current()
    first = loader.current()
    for _ in range(50):
        assert loader.current() is first  # a stat pass over the catalog, no parsing
    assert loader.reloads == 1
