"""Entry codes on their own: signing, reading, expiry, tampering, key rotation."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

import pytest

from booking.tickets import PREFIX, TicketClaims, TicketRefused, TicketSigner, derive_key

NOW = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
TTL = timedelta(seconds=60)
WINDOW = (datetime(2026, 12, 1, 1, 45, tzinfo=UTC), datetime(2026, 12, 1, 3, 15, tzinfo=UTC))
K1 = b"first key, long enough to be a real secret"
K2 = b"second key, the one that signs after rotation"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def signer(keys: dict[str, bytes] | None = None, current: str = "k1") -> TicketSigner:
    return TicketSigner(keys or {"k1": K1}, current)


def issue(ticket_signer: TicketSigner, now: datetime = NOW) -> tuple[str, datetime]:
    return ticket_signer.issue("r-123", "yonghe-temple", WINDOW, now=now, ttl=TTL)


def refusal(ticket_signer: TicketSigner, code: str, now: datetime = NOW) -> str:
    with pytest.raises(TicketRefused) as refused:
        ticket_signer.read(code, now=now)
    return refused.value.reason


def resigned(code: str, payload: bytes, key: bytes = K1) -> str:
    """A code with another payload, correctly signed under `key` (what only a key holder
    can make)."""
    _, kid, _, _ = code.split(".")
    body = b64(payload)
    signed = f"{PREFIX}.{kid}.{body}"
    return f"{signed}.{b64(hmac.new(key, signed.encode(), hashlib.sha256).digest())}"


# round trip --------------------------------------------------------------------------------


def test_a_code_reads_back_as_its_claims() -> None:
    ticket_signer = signer()
    code, expires_at = issue(ticket_signer)

    assert expires_at == NOW + TTL
    assert code.startswith("TG1.k1.")
    assert len(code.split(".")) == 4
    assert ticket_signer.read(code, now=NOW) == TicketClaims(
        reservation_id="r-123",
        site="yonghe-temple",
        window_start=WINDOW[0],
        window_end=WINDOW[1],
        expires_at=NOW + TTL,
    )


def test_the_payload_is_compact_json_in_base64url() -> None:
    code, _ = issue(signer())
    payload = json.loads(unb64(code.split(".")[2]))
    assert payload == {
        "r": "r-123",
        "s": "yonghe-temple",
        "w": [int(WINDOW[0].timestamp()), int(WINDOW[1].timestamp())],
        "e": int((NOW + TTL).timestamp()),
    }


def test_expiry_drops_microseconds() -> None:
    _, expires_at = issue(signer(), now=NOW + timedelta(microseconds=700_000))
    assert expires_at == NOW + TTL


# expiry ------------------------------------------------------------------------------------


def test_a_code_is_read_until_one_second_before_it_expires() -> None:
    ticket_signer = signer()
    code, expires_at = issue(ticket_signer)
    claims = ticket_signer.read(code, now=expires_at - timedelta(seconds=1))
    assert claims.reservation_id == "r-123"


def test_a_code_is_expired_at_its_expiry() -> None:
    ticket_signer = signer()
    code, expires_at = issue(ticket_signer)
    assert refusal(ticket_signer, code, now=expires_at) == "expired"
    assert refusal(ticket_signer, code, now=expires_at + timedelta(hours=1)) == "expired"


# tampering ---------------------------------------------------------------------------------


def test_a_tampered_payload_is_a_bad_signature() -> None:
    ticket_signer = signer()
    code, _ = issue(ticket_signer)
    prefix, kid, body, signature = code.split(".")
    payload = json.loads(unb64(body))
    payload["e"] += 3600  # a longer life
    forged = f"{prefix}.{kid}.{b64(json.dumps(payload, separators=(',', ':')).encode())}"
    assert refusal(ticket_signer, f"{forged}.{signature}") == "bad-signature"


def test_another_reservation_in_the_payload_is_a_bad_signature() -> None:
    ticket_signer = signer()
    code, _ = issue(ticket_signer)
    prefix, kid, body, signature = code.split(".")
    other = b64(unb64(body).replace(b'"r-123"', b'"r-999"'))
    assert other != body
    assert refusal(ticket_signer, f"{prefix}.{kid}.{other}.{signature}") == "bad-signature"


def test_a_tampered_signature_is_a_bad_signature() -> None:
    ticket_signer = signer()
    code, _ = issue(ticket_signer)
    prefix, kid, body, signature = code.split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    assert refusal(ticket_signer, f"{prefix}.{kid}.{body}.{flipped}") == "bad-signature"
    assert refusal(ticket_signer, f"{prefix}.{kid}.{body}.") == "bad-signature"


def test_a_code_signed_by_another_secret_under_the_same_key_id_is_a_bad_signature() -> None:
    code, _ = issue(signer({"k1": b"someone else's secret"}))
    assert refusal(signer(), code) == "bad-signature"


def test_a_relabelled_key_id_is_a_bad_signature() -> None:
    # The key id is signed too: a k1 code relabelled k2 does not verify under k2.
    ticket_signer = signer({"k1": K1, "k2": K2}, "k1")
    code, _ = issue(ticket_signer)
    relabelled = code.replace("TG1.k1.", "TG1.k2.", 1)
    assert refusal(ticket_signer, relabelled) == "bad-signature"


def test_an_unknown_key_id_is_refused() -> None:
    code, _ = issue(signer({"k9": K1}, "k9"))
    assert refusal(signer(), code) == "unknown-key"


# malformed ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        "",
        "hello",
        "TG1",
        "TG1.k1",
        "TG1.k1.payload",
        "TG1.k1.payload.sig.extra",
        "TG2.k1.payload.sig",
        "tg1.k1.payload.sig",
    ],
)
def test_a_code_of_the_wrong_shape_is_malformed(code: str) -> None:
    assert refusal(signer(), code) == "malformed"


def test_a_wrong_prefix_on_a_genuine_code_is_malformed() -> None:
    code, _ = issue(signer())
    assert refusal(signer(), "TG2" + code[3:]) == "malformed"


def test_a_signed_payload_that_is_not_base64_is_malformed() -> None:
    code, _ = issue(signer())
    # Correctly signed (so only a key holder's mistake could make it), but not base64url.
    signed = f"{PREFIX}.k1.%%%not-base64%%%"
    forged = f"{signed}.{b64(hmac.new(K1, signed.encode(), hashlib.sha256).digest())}"
    assert code != forged
    assert refusal(signer(), forged) == "malformed"


@pytest.mark.parametrize(
    "payload",
    [
        b"not json at all",
        b"\xff\xfe binary",
        b"[1, 2, 3]",
        b'"a string"',
        b"{}",
        b'{"r": "r-1", "s": "x", "w": [1], "e": 2}',
        b'{"r": "r-1", "s": "x", "w": ["a", "b"], "e": 2}',
        b'{"r": "r-1", "s": "x", "w": [1, 2], "e": null}',
    ],
)
def test_a_signed_payload_that_is_not_the_claims_is_malformed(payload: bytes) -> None:
    code, _ = issue(signer())
    assert refusal(signer(), resigned(code, payload)) == "malformed"


def test_a_refusal_carries_a_message() -> None:
    with pytest.raises(TicketRefused) as refused:
        signer().read("hello", now=NOW)
    assert refused.value.reason == "malformed"
    assert refused.value.message == "not a tidegate entry code"
    assert str(refused.value) == "not a tidegate entry code"


# rotation ----------------------------------------------------------------------------------


def test_a_code_signed_with_the_old_key_is_read_after_rotation() -> None:
    old = signer({"k1": K1}, "k1")
    code, _ = issue(old)

    rotated = signer({"k1": K1, "k2": K2}, "k2")
    assert rotated.read(code, now=NOW).reservation_id == "r-123"

    fresh, _ = issue(rotated)
    assert fresh.startswith("TG1.k2.")
    assert rotated.read(fresh, now=NOW).reservation_id == "r-123"
    # The old signer does not know k2 yet.
    assert refusal(old, fresh) == "unknown-key"


def test_once_the_old_key_is_dropped_its_codes_are_refused() -> None:
    code, _ = issue(signer({"k1": K1}, "k1"))
    assert refusal(signer({"k2": K2}, "k2"), code) == "unknown-key"


def test_the_signing_key_must_be_known() -> None:
    with pytest.raises(ValueError, match="no ticket key k3"):
        TicketSigner({"k1": K1, "k2": K2}, "k3")


# keys --------------------------------------------------------------------------------------


def test_derive_key_differs_per_purpose_and_per_master() -> None:
    master = b"the service's master secret"
    entry = derive_key(master, "tidegate entry codes")
    assert entry == derive_key(master, "tidegate entry codes")
    assert len(entry) == 32
    assert entry != derive_key(master, "something else")
    assert entry != derive_key(b"another master", "tidegate entry codes")
    assert entry != master


def test_codes_signed_with_keys_for_other_purposes_do_not_verify() -> None:
    master = b"the service's master secret"
    code, _ = issue(signer({"k1": derive_key(master, "id hashing")}))
    assert refusal(signer({"k1": derive_key(master, "tidegate entry codes")}), code) == (
        "bad-signature"
    )


def test_a_signed_payload_with_an_absurd_timestamp_is_malformed() -> None:
    code, _ = issue(signer())
    payload = b'{"r": "r-1", "s": "x", "w": [1, 2], "e": 100000000000000000000}'
    assert refusal(signer(), resigned(code, payload)) == "malformed"
