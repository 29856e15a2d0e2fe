"""The webhook signature scheme (Standard Webhooks): what the service signs, receivers accept.

Receivers meet untrusted bytes here, so besides the examples there are
property tests: every signed delivery verifies, any change to the body, id or
timestamp does not, and no header soup makes the verifier fail other than
with :class:`WebhookVerificationError`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trust_protocol.webhook_signature import (
    WebhookVerificationError,
    headers,
    new_secret,
    secret_key,
    sign,
    verify,
)

NOW = 1_900_000_000
SECRET = new_secret()
IDS = st.from_regex(r"[A-Za-z0-9_-]{1,128}", fullmatch=True)
BODIES = st.binary(max_size=2048)


def _independent(secret: str, msg_id: str, stamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def test_secret_format_and_signature_match_the_standard():
    assert SECRET.startswith("whsec_") and len(secret_key(SECRET)) == 32
    assert new_secret() != new_secret()
    body = b'{"type":"device.revoked"}'
    assert sign(SECRET, "evt-1", NOW, body) == _independent(SECRET, "evt-1", NOW, body)
    # The example of the Standard Webhooks spec (msg id, timestamp, minified body).
    spec_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    spec_body = (
        b'{"type":"contact.created","timestamp":"2022-11-03T20:26:10.344522Z",'
        b'"data":{"id":"1f81eb52-5198-4599-803e-771906343485"}}'
    )
    assert sign(spec_secret, "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", 1674087231, spec_body) == (
        _independent(spec_secret, "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", 1674087231, spec_body)
    )


def test_verify_accepts_a_signed_delivery_in_any_header_case():
    body = b'{"a":1}'
    sent = headers(SECRET, "evt-2", NOW, body)
    assert verify(SECRET, sent, body, now=NOW) == "evt-2"
    upper = {k.upper(): v for k, v in sent.items()}
    assert verify(SECRET, upper, body, now=NOW + 299) == "evt-2"


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"body": b'{"a":2}'}, "no_matching_signature"),
        ({"now": NOW + 301}, "timestamp_out_of_tolerance"),
        ({"now": NOW - 301}, "timestamp_out_of_tolerance"),
        ({"secret": new_secret()}, "no_matching_signature"),
        ({"webhook-id": "evt-other"}, "no_matching_signature"),
        ({"webhook-timestamp": str(NOW + 1)}, "no_matching_signature"),
        ({"webhook-timestamp": "1e9"}, "bad_timestamp"),
        ({"webhook-id": "a.b"}, "bad_id"),
        ({"webhook-signature": "v1a,AAAA"}, "no_matching_signature"),
        ({"webhook-signature": "v1,not base64!"}, "no_matching_signature"),
        ({"webhook-signature": ""}, "missing_header"),
        ({"drop": "webhook-id"}, "missing_header"),
        ({"drop": "webhook-signature"}, "missing_header"),
    ],
)
def test_verify_refuses_tampered_or_old_deliveries(change, code):
    body = b'{"a":1}'
    sent = headers(SECRET, "evt-3", NOW, body)
    change = dict(change)  # the parameter is shared by every run of this test in a process
    sent.pop(change.pop("drop", None), None)
    secret = change.pop("secret", SECRET)
    got_body = change.pop("body", body)
    now = change.pop("now", NOW)
    sent.update(change)
    with pytest.raises(WebhookVerificationError) as exc:
        verify(secret, sent, got_body, now=now)
    assert exc.value.code == code


def test_one_matching_signature_among_several_is_enough():
    body = b"{}"
    good = sign(SECRET, "evt-4", NOW, body)
    old = sign(new_secret(), "evt-4", NOW, body)
    sent = {"webhook-id": "evt-4", "webhook-timestamp": str(NOW)}
    assert verify(SECRET, {**sent, "webhook-signature": f"{old} v1a,xyz {good}"}, body, now=NOW)


@pytest.mark.parametrize("bad", ["", "whsec_", "whsec_!!!", "sk_abc", "whsec_" + "A" * 8])
def test_bad_secrets_are_refused(bad):
    with pytest.raises(ValueError):
        secret_key(bad)


@given(msg_id=IDS, stamp=st.integers(0, 10**11), body=BODIES)
def test_property_every_signed_delivery_verifies(msg_id, stamp, body):
    assert verify(SECRET, headers(SECRET, msg_id, stamp, body), body, now=stamp) == msg_id


@given(msg_id=IDS, body=BODIES.filter(bool), data=st.data())
def test_property_any_changed_body_byte_fails(msg_id, body, data):
    sent = headers(SECRET, msg_id, NOW, body)
    i = data.draw(st.integers(0, len(body) - 1))
    flip = data.draw(st.integers(1, 255))
    tampered = body[:i] + bytes([body[i] ^ flip]) + body[i + 1 :]
    with pytest.raises(WebhookVerificationError) as exc:
        verify(SECRET, sent, tampered, now=NOW)
    assert exc.value.code == "no_matching_signature"


@given(msg_id=IDS, body=BODIES, skew=st.integers(301, 10**9), sign_=st.sampled_from([1, -1]))
def test_property_old_or_future_timestamps_fail(msg_id, body, skew, sign_):
    sent = headers(SECRET, msg_id, NOW, body)
    with pytest.raises(WebhookVerificationError) as exc:
        verify(SECRET, sent, body, now=NOW + sign_ * skew)
    assert exc.value.code == "timestamp_out_of_tolerance"


@given(
    found=st.dictionaries(
        st.sampled_from(["webhook-id", "Webhook-Timestamp", "webhook-signature", "x"]),
        st.text(max_size=300),
    ),
    body=BODIES,
)
def test_property_hostile_headers_only_ever_fail_cleanly(found, body):
    with pytest.raises(WebhookVerificationError):
        verify(SECRET, found, body, now=NOW)


def _documented_verifier():
    """The receiver snippet of docs/events.md, as printed there."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "events.md").read_text()
    source = text.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict = {}
    exec(compile(source, "docs/events.md", "exec"), namespace)  # noqa: S102 - our own docs
    return namespace["verify_webhook"]


def test_the_documented_verifier_accepts_what_the_service_signs_and_nothing_else():
    import time

    verify_webhook = _documented_verifier()
    body = b'{"id":"evt-5","type":"device.revoked"}'
    now = int(time.time())
    sent = headers(SECRET, "evt-5", now, body)
    assert verify_webhook(SECRET, sent, body) == "evt-5"
    for bad_body, bad_headers in [
        (body + b" ", sent),
        (body, {**sent, "webhook-timestamp": str(now - 301)}),
        (body, {**sent, "webhook-signature": sign(new_secret(), "evt-5", now, body)}),
    ]:
        with pytest.raises(ValueError):
            verify_webhook(SECRET, bad_headers, bad_body)


# -- Found by the mutation run over trust_protocol/webhook_signature.py (2026-12-06): each
# limit at the value allowed and one beyond, each refusal's text, and the junk a lenient
# base64 decoder or splitter would have let through.


def _secret_of(n: int, prefix: str = "whsec_") -> str:
    return prefix + base64.b64encode(bytes(range(n))).decode()


def test_secrets_of_24_to_64_bytes():
    assert secret_key(_secret_of(24)) == bytes(range(24))
    assert secret_key(_secret_of(64)) == bytes(range(64))
    for n in (23, 65):
        with pytest.raises(ValueError, match=r"^a webhook secret holds 24 to 64 bytes$"):
            secret_key(_secret_of(n))


def test_a_secret_needs_the_prefix_and_strict_base64():
    with pytest.raises(ValueError, match=r"^a webhook secret starts with whsec_$"):
        secret_key(_secret_of(32, prefix="wrong_"))
    with pytest.raises(ValueError, match=r"^a webhook secret starts with whsec_$"):
        secret_key(b"whsec_" + base64.b64encode(bytes(32)))  # type: ignore[arg-type]
    # A lenient decoder would skip the '!' and '\n' and read 32 good bytes.
    for junk in ("!", "\n", " "):
        text = base64.b64encode(bytes(range(32))).decode()
        with pytest.raises(ValueError, match=r"^a webhook secret is whsec_ followed by base64$"):
            secret_key("whsec_" + text[:8] + junk + text[8:])


def test_sign_refuses_a_bad_id_with_its_reason():
    with pytest.raises(ValueError, match=r"^a webhook id is 1 to 128 letters, digits, '-' or '_'$"):
        sign(SECRET, "a.b", NOW, b"{}")


def test_new_secrets_hold_32_random_bytes():
    assert all(len(secret_key(new_secret())) == 32 for _ in range(5))


@pytest.mark.parametrize("edge", [-300, 300])
def test_the_tolerance_is_inclusive(edge):
    body = b"{}"
    sent = headers(SECRET, "evt-6", NOW, body)
    assert verify(SECRET, sent, body, now=NOW + edge) == "evt-6"
    assert verify(SECRET, sent, body, now=NOW + edge, tolerance=301) == "evt-6"
    with pytest.raises(WebhookVerificationError) as exc:
        verify(SECRET, sent, body, now=NOW + edge, tolerance=299)
    assert exc.value.code == "timestamp_out_of_tolerance"


def test_verify_reads_the_clock_when_not_given_now():
    import time

    body = b"{}"
    assert verify(SECRET, headers(SECRET, "evt-7", int(time.time()), body), body) == "evt-7"
    with pytest.raises(WebhookVerificationError) as exc:
        verify(SECRET, headers(SECRET, "evt-7", int(time.time()) - 3600, body), body)
    assert exc.value.code == "timestamp_out_of_tolerance"


def test_signature_entries_are_strict_and_each_is_looked_at():
    body = b"{}"
    good = sign(SECRET, "evt-8", NOW, body)
    sent = {"webhook-id": "evt-8", "webhook-timestamp": str(NOW)}

    def code(signatures: str) -> str | None:
        try:
            verify(SECRET, {**sent, "webhook-signature": signatures}, body, now=NOW)
        except WebhookVerificationError as exc:
            return exc.code
        return None

    assert code(good) is None
    # An entry that is not base64 is skipped, not the end of the list.
    assert code(f"v1,not-base64! {good}") is None
    assert code(f"v1,AAAA== {good}") is None
    # The right MAC with junk in its base64 does not count (a lenient decoder drops junk).
    mac = good.removeprefix("v1,")
    assert code(f"v1,{mac[:10]}!{mac[10:]}") == "no_matching_signature"
    assert code(f"v1,{mac[:10]}\n{mac[10:]}") == "no_matching_signature"
    # Entries are separated by single spaces: a tab does not separate them, and every
    # space-separated piece (empty ones too) counts towards MAX_SIGNATURES.
    assert code(f"v1a,xyz\t{good}") == "no_matching_signature"
    assert code(" " * 9 + good) is None
    assert code(" " * 10 + good) == "no_matching_signature"


@pytest.mark.parametrize(
    ("change", "code", "message"),
    [
        ({"drop": "webhook-id"}, "missing_header", "the webhook-id header is missing"),
        ({"webhook-id": "a.b"}, "bad_id", "webhook-id is not a valid id"),
        ({"webhook-timestamp": "x"}, "bad_timestamp", "webhook-timestamp is not Unix seconds"),
        (
            {"now": NOW + 301},
            "timestamp_out_of_tolerance",
            "webhook-timestamp is too far from now (replayed?)",
        ),
        ({"body": b"[]"}, "no_matching_signature", "no signature matches"),
    ],
)
def test_each_refusal_says_why(change, code, message):
    """The code is for programs; the text is what a receiver's log shows a person."""
    body = b"{}"
    sent = headers(SECRET, "evt-9", NOW, body)
    sent.pop(change.get("drop", ""), None)
    sent.update({k: v for k, v in change.items() if k.startswith("webhook-")})
    with pytest.raises(WebhookVerificationError) as exc:
        verify(SECRET, sent, change.get("body", body), now=change.get("now", NOW))
    assert (exc.value.code, str(exc.value)) == (code, message)
