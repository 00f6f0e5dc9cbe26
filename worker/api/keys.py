"""API keys: merchants' (one each, stored as a hash) and the operator's (a setting).

A key is 32 random bytes, so a plain SHA-256 is enough to store it: a slow password hash exists to
resist guessing low-entropy secrets, and nobody guesses 256 random bits. The hash being
deterministic lets a request find its merchant by an indexed equality lookup.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.orm import Session

from store.sql.tables import MerchantRow

PREFIX = "slt_"


@dataclass(frozen=True)
class Caller:
    """Who is asking: an operator (sees everything) or exactly one merchant."""

    merchant_id: str | None
    operator: bool = False

    def may_read(self, merchant_id: str | None) -> bool:
        return self.operator or (merchant_id is not None and merchant_id == self.merchant_id)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def issue_key(session: Session, merchant_id: str) -> str:
    """Give the merchant a new key (replacing any old one), creating its row if absent.
    Only the hash is stored: the key is returned once, to be handed over, and never again."""
    key = new_key()
    row = session.get(MerchantRow, merchant_id)
    if row is None:
        row = MerchantRow(merchant_id=merchant_id, enabled=True)
        session.add(row)
    row.api_key_hash = hash_key(key)
    return key


def authenticate(session: Session, key: str, operator_key: SecretStr | None) -> Caller | None:
    """The caller this key belongs to, or None. The operator key is compared as hashes with
    compare_digest, so neither its length nor its content leaks through timing."""
    return authenticate_digest(session, hash_key(key), operator_key)


def authenticate_digest(
    session: Session, digest: str, operator_key: SecretStr | None
) -> Caller | None:
    """As `authenticate`, from the key's hash (what the console's session cookie holds, so a
    reissued key or a changed operator key ends the sessions opened with the old one)."""
    if operator_key is not None:
        expected = hash_key(operator_key.get_secret_value())
        if hmac.compare_digest(digest, expected):
            return Caller(merchant_id=None, operator=True)
    merchant = session.scalar(
        select(MerchantRow.merchant_id).where(MerchantRow.api_key_hash == digest)
    )
    return Caller(merchant_id=merchant) if merchant is not None else None
