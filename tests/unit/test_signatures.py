"""Tenant authentication by signed records: the router accepts a job only with its tenant's signature."""

from __future__ import annotations

import orjson
from pydantic import SecretStr

from modelyard.app import build_admission, build_routing_policy
from modelyard.core.settings import load_settings
from modelyard.core.signatures import SIGNATURE_HEADER, TenantKeys, sign, signature_header
from schemas import Assignment, DeadLetter
from streams.policy import Source

KEYS = {"acme": SecretStr("acme-secret-key"), "globex": SecretStr("globex-secret-key")}


def job(tenant: str = "acme") -> bytes:
    return orjson.dumps(
        {"job_id": f"j-{tenant}", "tenant": tenant, "input": "charged twice", "task": "generation"}
    )


def routed(value: bytes, signature: bytes | None) -> tuple[str, bytes]:
    policy = build_routing_policy(load_settings(router={"tenant_keys": KEYS}))
    out = policy.route(value, Source("jobs", 0, 1, signature))
    return out.topic, out.value


def test_a_job_signed_with_its_tenants_key_routes() -> None:
    topic, value = routed(job(), sign(KEYS["acme"], job()))
    assert topic == "modelyard.pool.frontier" and Assignment.model_validate_json(value).item.tenant == "acme"


def test_missing_forged_or_foreign_signatures_are_dead_lettered_without_echoing_secrets() -> None:
    forged = job().replace(b"charged twice", b"charged thrice")
    cases = {
        "no header": (job(), None),
        "another tenant's key": (job(), sign(KEYS["globex"], job())),
        "value changed after signing": (forged, sign(KEYS["acme"], job())),
        "tenant without a key": (job("initech"), sign(KEYS["acme"], job("initech"))),
    }
    for name, (value, signature) in cases.items():
        topic, letter_bytes = routed(value, signature)
        letter = DeadLetter.model_validate_json(letter_bytes)
        assert topic == "modelyard.deadletter", name
        assert (letter.reason, letter.field) == ("unauthenticated", "tenant"), name
        assert b"secret-key" not in letter_bytes, name


def test_headers_are_found_in_pairs_or_mappings_and_only_for_held_keys() -> None:
    keys = TenantKeys({"acme": KEYS["acme"]})
    [(name, value)] = keys.headers_for("acme", job())
    assert name == SIGNATURE_HEADER and keys.verify("acme", job(), value) is None
    assert keys.headers_for("globex", job()) == []
    assert signature_header([("other", b"x"), (SIGNATURE_HEADER, value)]) == value
    assert signature_header({SIGNATURE_HEADER: value}) == value and signature_header(None) is None


def test_dead_letters_keep_the_signature_and_replay_never_signs_for_the_tenant() -> None:
    """A dead letter of a signed job carries its signature; rechecking an unsigned or forged original fails."""
    import base64
    from datetime import UTC, datetime

    from modelyard.ops.dead_letters import StoredLetter, recheck

    settings = load_settings(router={"tenant_keys": KEYS, "known_tenants": ["acme"]})
    policy = build_routing_policy(load_settings(router={"tenant_keys": KEYS, "known_tenants": ["acme"]}))
    signed_value = orjson.dumps(
        {"job_id": "j-x", "tenant": "acme", "input": "x", "task": "generation", "priority": 42}
    )
    letter = DeadLetter.model_validate_json(
        policy.route(signed_value, Source("jobs", 0, 1, sign(KEYS["acme"], signed_value))).value
    )
    assert letter.reason == "validation" and letter.signature == sign(KEYS["acme"], signed_value).decode()

    def stored(value: bytes, signature: str | None) -> StoredLetter:
        dead = DeadLetter(
            stage="router",
            reason="validation",
            error="e",
            original_b64=base64.b64encode(value).decode(),
            original_bytes=len(value),
            signature=signature,
            at=datetime.now(UTC),
        )
        return StoredLetter(0, 0, 0, dead)

    fixed, admission = job(), build_admission(settings, replay=True)
    assert recheck(stored(fixed, sign(KEYS["acme"], fixed).decode()), admission).job_id == "j-acme"
    assert recheck(stored(fixed, None), admission).reason == "unauthenticated"
    assert recheck(stored(fixed, sign(KEYS["globex"], fixed).decode()), admission).reason == "unauthenticated"
