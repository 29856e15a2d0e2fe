"""The agent port list (``trust_protocol/ports.py``): separators, the empty cases, each bound.

Written for the mutation run over ``trust_protocol/ports.py``: ``test_protocol_unit.py``'s
``test_ports`` checks one mixed list and four refusals; these name every case, with the
lowest and highest port accepted and the next one beyond each refused.
"""

from __future__ import annotations

import pytest

from trust_protocol.ports import DEFAULT_AGENT_PORTS, parse_ports


def test_the_default_list_is_six_distinct_valid_ports():
    assert len(DEFAULT_AGENT_PORTS) == 6 == len(set(DEFAULT_AGENT_PORTS))
    assert all(1024 < p < 65536 for p in DEFAULT_AGENT_PORTS)


@pytest.mark.parametrize("text", [None, "", " ", "\t\n "])
def test_nothing_given_is_the_default(text):
    assert parse_ports(text) is DEFAULT_AGENT_PORTS


@pytest.mark.parametrize("text", [None, "", "  "])
def test_nothing_given_is_the_callers_default_when_it_passes_one(text):
    assert parse_ports(text, (8000,)) == (8000,)
    assert parse_ports(text, ()) == ()


@pytest.mark.parametrize(
    ("text", "ports"),
    [
        ("1,2", (1, 2)),  # a comma alone separates
        ("1 2", (1, 2)),
        ("1, 2 3", (1, 2, 3)),
        (" 47621 ,,37123\t", (47621, 37123)),  # doubled commas, tabs, outer space
        ("5,5", (5, 5)),  # order and repeats are the caller's
        ("22841", (22841,)),
    ],
)
def test_separators(text, ports):
    assert parse_ports(text) == ports
    assert parse_ports(text, (9,)) == ports  # a given list is used, not the default


def test_the_lowest_and_highest_ports_are_accepted():
    assert parse_ports("1") == (1,)
    assert parse_ports("65535") == (65535,)
    assert parse_ports("1 65535") == (1, 65535)


@pytest.mark.parametrize(
    "text",
    [
        "0",  # below the lowest
        "65536",  # above the highest
        "-1",
        "1 0",  # one bad port spoils the list, wherever it is
        "0 1",
        "1,65536",
        "70000 1",
        ",",  # separators only: no port at all
        " , ,, ",
        "1,-2",
    ],
)
def test_bad_lists_are_refused(text):
    with pytest.raises(ValueError, match=r"^bad port list: ") as err:
        parse_ports(text)
    assert repr(text) in str(err.value)


@pytest.mark.parametrize("text", ["x", "1.5", "1;2", "0x10"])
def test_what_is_not_a_number_is_refused(text):
    with pytest.raises(ValueError, match="invalid literal for int"):
        parse_ports(text)
