"""Tenant authentication by signed records: HMAC-SHA256 of the record's value under the tenant's key.

A producer that holds tenant T's key adds the header `modelyard-signature: v1=<hex>` to each job of T; the
router (with `router.tenant_keys` set) recomputes it over the exact value bytes it received. The value names
the tenant, so a signature binds the job to its tenant; a record with no, a wrong, or another tenant's
signature is dead-lettered (reason `unauthenticated`). Keys are SecretStr settings and never logged.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence

from pydantic import SecretStr

from schemas.rejection import Rejection

SIGNATURE_HEADER = "modelyard-signature"
VERSION = b"v1="


def sign(key: SecretStr, value: bytes) -> bytes:
    return VERSION + hmac.new(key.get_secret_value().encode(), value, hashlib.sha256).hexdigest().encode()


def signature_header(headers: Sequence[tuple[str, bytes]] | Mapping[str, bytes] | None) -> bytes | None:
    """The signature among a record's headers ((name, value) pairs, or a mapping as Faust may give), if any."""
    pairs = headers.items() if isinstance(headers, Mapping) else headers or ()
    for name, value in pairs:
        if name == SIGNATURE_HEADER:
            return bytes(value)
    return None


class TenantKeys:
    def __init__(self, keys: dict[str, SecretStr]) -> None:
        self.keys = keys

    def verify(self, tenant: str, value: bytes, signature: bytes | None) -> Rejection | None:
        """None when `signature` is tenant's signature of `value`; else why not (never echoing a secret)."""
        key = self.keys.get(tenant)
        if key is None:
            return Rejection("unauthenticated", "tenant", f"tenant {tenant!r} has no signing key configured")
        if signature is None:
            return Rejection(
                "unauthenticated", "tenant", f"job has no {SIGNATURE_HEADER} header (tenant {tenant!r})"
            )
        if not hmac.compare_digest(signature, sign(key, value)):
            return Rejection(
                "unauthenticated", "tenant", f"{SIGNATURE_HEADER} does not match tenant {tenant!r}'s key"
            )
        return None

    def headers_for(self, tenant: str, value: bytes) -> list[tuple[str, bytes]]:
        """The header to send with a job of `tenant`, when this process holds that tenant's key."""
        key = self.keys.get(tenant)
        return [(SIGNATURE_HEADER, sign(key, value))] if key is not None else []
