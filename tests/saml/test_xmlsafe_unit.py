"""The hardened XML parser on its own: each limit, each refusal and its code, and each
parser setting seen from its effect on the tree.

Written for the mutation run over ``idp_service/saml/protocol/xmlsafe.py``. A DOCTYPE in
UTF-8 is refused by the byte scan before lxml sees it; the same document in UTF-16 passes
the scan and must be refused by what happens during and after the parse, so most cases
below are tried in both encodings.
"""

from __future__ import annotations

import pytest
from lxml import etree

from idp_service.saml.errors import SamlError
from idp_service.saml.protocol import xmlsafe


def _refused(data: bytes, code: str, *, max_size: int = 100_000) -> SamlError:
    with pytest.raises(SamlError) as refused:
        xmlsafe.parse(data, max_size=max_size)
    assert refused.value.code == code, refused.value
    return refused.value


def _utf16(text: str) -> bytes:
    return text.encode("utf-16")  # with a byte order mark, as a sender would write it


# ---- size --------------------------------------------------------------------------------


def test_the_size_limit_is_exact():
    doc = b"<a>" + b"x" * 93 + b"</a>"
    assert len(doc) == 100
    assert xmlsafe.parse(doc, max_size=100).text == "x" * 93
    refused = _refused(doc, "saml_too_large", max_size=99)
    assert refused.status == 413
    assert _refused(doc + b" ", "saml_too_large", max_size=100).status == 413


def test_other_refusals_are_400():
    assert _refused(b"<a>", "saml_malformed").status == 400
    assert _refused(b"<!DOCTYPE a><a/>", "saml_dtd_forbidden").status == 400


# ---- DTDs and entities -------------------------------------------------------------------


@pytest.mark.parametrize(
    "doc",
    [
        "<!DOCTYPE a><a/>",
        '<!DOCTYPE a [<!ENTITY e "x">]><a>&e;</a>',
        '<!DOCTYPE a [<!ENTITY e "x">]><a>x</a>',  # declared, never used
        '<!DOCTYPE a SYSTEM "http://127.0.0.1:9/a.dtd"><a/>',
        '<!DOCTYPE a SYSTEM "file:///etc/passwd"><a/>',
        "<!doctype a><a/>",
        "<! DOCTYPE a><a/>",
        "<!ELEMENT a ANY><a/>",
        '<!ATTLIST a b CDATA "c"><a/>',
    ],
)
def test_a_dtd_is_refused_in_utf8(doc):
    _refused(doc.encode(), "saml_dtd_forbidden")


@pytest.mark.parametrize(
    "doc",
    [
        "<!DOCTYPE a><a/>",
        '<!DOCTYPE a [<!ENTITY e "x">]><a>&e;</a>',
        '<!DOCTYPE a [<!ENTITY e "x">]><a>x</a>',
        '<!DOCTYPE a [<!ENTITY e SYSTEM "file:///etc/passwd">]><a>&e;</a>',
        '<!DOCTYPE a SYSTEM "http://127.0.0.1:9/a.dtd"><a/>',
        '<!DOCTYPE a SYSTEM "file:///etc/passwd"><a/>',
        '<!DOCTYPE a SYSTEM "no-such.dtd"><a/>',
        '<!DOCTYPE a PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN" "x.dtd"><a/>',
    ],
)
def test_a_dtd_is_refused_in_utf16(doc):
    data = _utf16(doc)
    assert not xmlsafe._DOCTYPE.search(data)  # the byte scan cannot see it
    _refused(data, "saml_dtd_forbidden")


def test_an_external_dtd_is_never_read(tmp_path):
    """Whatever the file holds (or whether it exists), the answer is the same and the file
    is never opened: a file that is not a DTD would fail the parse (saml_malformed) if it
    were read, which told an attacker that the file exists and let them make the service
    read any path (a FIFO, a device)."""
    not_a_dtd = tmp_path / "not-a-dtd"
    not_a_dtd.write_text("this is not a DTD <<<")
    declares = tmp_path / "declares.dtd"
    declares.write_text('<!ENTITY e "from the file">')
    for path in (not_a_dtd, declares, tmp_path / "missing.dtd"):
        _refused(_utf16(f'<!DOCTYPE a SYSTEM "{path.as_uri()}"><a/>'), "saml_dtd_forbidden")
        _refused(_utf16(f'<!DOCTYPE a SYSTEM "{path.as_uri()}"><a>&e;</a>'), "saml_dtd_forbidden")
        _refused(
            _utf16(f'<!DOCTYPE a [<!ENTITY e SYSTEM "{path.as_uri()}">]><a>&e;</a>'),
            "saml_dtd_forbidden",
        )


def test_entities_are_not_expanded_and_undeclared_ones_are_malformed():
    _refused(b"<a>&undefined;</a>", "saml_malformed")
    # An entity whose text is itself not balanced: refused as a DTD, not read as markup.
    _refused(_utf16('<!DOCTYPE a [<!ENTITY e "x">]><a><b>&e;</b></a>'), "saml_dtd_forbidden")
    # The predefined and character entities are plain text.
    assert xmlsafe.parse(b"<a>&lt;&#65;&amp;</a>", max_size=100).text == "<A&"


# ---- what the parser keeps -----------------------------------------------------------------


def test_comments_and_processing_instructions_are_dropped():
    root = xmlsafe.parse(b"<a>al<!-- x -->ice<?pi data?>@example.com<b/><!--y--></a>", max_size=200)
    assert root.text == "alice@example.com"
    assert [child.tag for child in root] == ["b"]
    assert etree.tostring(root) == b"<a>alice@example.com<b/></a>"


def test_a_processing_instruction_before_the_root_is_dropped():
    root = xmlsafe.parse(b'<?xml-stylesheet href="x"?><!-- c --><a/>', max_size=200)
    assert root.getprevious() is None
    assert etree.tostring(root.getroottree()) == b"<a/>"


def test_xml_id_attributes_are_not_collected_as_ids():
    root = xmlsafe.parse(b'<a ID="r"><b xml:id="x"/></a>', max_size=200)
    assert root.getroottree().xpath('id("x")') == []


def test_nesting_deeper_than_libxml2s_default_is_refused():
    assert xmlsafe.parse(b"<a>" * 200 + b"</a>" * 200, max_size=10_000).tag == "a"
    _refused(b"<a>" * 300 + b"</a>" * 300, "saml_malformed")


def test_the_document_is_the_tree_of_its_root():
    root = xmlsafe.parse(
        b'<?xml version="1.0" encoding="UTF-8"?>\n<r xmlns="urn:x"><c/></r>', max_size=200
    )
    assert root.tag == "{urn:x}r" and root.getparent() is None
    assert xmlsafe.parse(_utf16("<r><c>t</c></r>"), max_size=200)[0].text == "t"


@pytest.mark.parametrize(
    "data",
    [b"", b"   ", b"<a>", b"<a></b>", b"<a>\x00</a>", b"text", b"<a/><b/>", b"\xff\xfe<\x00"],
)
def test_what_lxml_cannot_parse_is_malformed(data):
    refused = _refused(data, "saml_malformed")
    assert str(refused).startswith("saml_malformed: not well-formed XML: ")
