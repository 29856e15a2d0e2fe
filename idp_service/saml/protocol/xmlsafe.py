"""The hardened XML parser every untrusted SAML document goes through.

No DTD is loaded or allowed, no entity is resolved, nothing is fetched from the
network, and any document carrying a DOCTYPE is refused outright (billion
laughs, external entities, ``file://`` DTDs). Anything lxml cannot parse becomes
``SamlError("saml_malformed")``; nothing else escapes.

``load_dtd=False`` alone does not stop libxml2 from reading an external DTD subset: with
``collect_ids=False`` (which we need, see below) lxml sets a ``loadsubset`` flag and
libxml2 then loads any subset it is given. A document in UTF-16 slips past the byte scan
for DOCTYPE, so every parser also carries a resolver that refuses every external load
(DTD, entity, anything) before a byte is read; the check after the parse then refuses
the DOCTYPE itself. ``collect_ids=False`` keeps ``xml:id`` attributes out of the
document's ID table, so only the ``ID`` that the signature check registers can be a
reference's target.
"""

from __future__ import annotations

import re

from lxml import etree

from idp_service.saml.errors import SamlError

_DOCTYPE = re.compile(rb"<!\s*(DOCTYPE|ENTITY|ELEMENT|ATTLIST)", re.IGNORECASE)


class _RefuseExternal(etree.Resolver):
    """Refuses every external resource the parser asks for (lxml re-raises the error)."""

    # lxml passes a third argument (the context) that lxml-stubs 0.5 leaves out.
    def resolve(  # type: ignore[override]
        self, system_url: str | None, public_id: str | None, context: object
    ) -> None:
        raise SamlError("saml_dtd_forbidden", "external DTDs and entities are refused")


def _parser() -> etree.XMLParser:
    parser = etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_pis=True,
        remove_comments=True,
        collect_ids=False,
    )
    parser.resolvers.add(_RefuseExternal())
    return parser


def parse(data: bytes, *, max_size: int) -> etree._Element:
    """Parse ``data`` (an untrusted document) or raise :class:`SamlError`."""
    if len(data) > max_size:
        raise SamlError("saml_too_large", f"document exceeds {max_size} bytes", status=413)
    if _DOCTYPE.search(data):
        raise SamlError("saml_dtd_forbidden", "DOCTYPE and entity declarations are refused")
    try:
        root = etree.fromstring(data, parser=_parser())
    except (etree.XMLSyntaxError, ValueError) as exc:
        raise SamlError(
            "saml_malformed", f"not well-formed XML: {exc.msg if hasattr(exc, 'msg') else exc}"
        ) from None
    tree = root.getroottree()
    # The byte scan misses a DOCTYPE in another encoding (UTF-16); the parse does not.
    # (lxml-stubs 0.5 leaves DocInfo.doctype out; lxml has it.)
    if tree.docinfo.doctype or tree.docinfo.internalDTD is not None:  # type: ignore[union-attr]
        raise SamlError("saml_dtd_forbidden", "DOCTYPE declarations are refused")
    for node in root.iter(etree.Entity):
        raise SamlError("saml_dtd_forbidden", f"entity reference {node.text!r} is refused")
    return root
