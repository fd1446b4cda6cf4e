"""Per-user tokens for the local HTTP API (`medsight.api`): created and revoked on the System page.

A token is shown once when it is made and only its SHA-256 is kept. Tokens are 32 random bytes
(`secrets.token_urlsafe`), so a plain hash is enough: there is nothing to guess that a slow password hash
would protect. A revoked token stays listed (when it was made, last used and revoked) but no longer signs in.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from medsight.storage.database import Database, timestamp

TOKEN_PREFIX = "msk_"
MAX_LABEL = 80


def token_digest(token: str) -> str:
    """The stored form of a token: hex SHA-256 of its text."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ApiToken:
    """One token as listed (never its secret)."""

    id: int
    user: str
    label: str
    hint: str
    created: str
    last_used: str | None
    revoked: str | None

    @property
    def active(self) -> bool:
        return self.revoked is None

    def to_dict(self) -> dict:
        return {"id": self.id, "user": self.user, "label": self.label, "hint": self.hint, "created": self.created,
                "last_used": self.last_used, "revoked": self.revoked, "active": self.active}


def _token(row) -> ApiToken:
    return ApiToken(row["id"], row["user"], row["label"], row["hint"], row["created"], row["last_used"],
                    row["revoked"])


class ApiTokenStore:
    """The `api_tokens` table. Listing and revoking take the user name: a user manages only their own tokens."""

    def __init__(self, database: Database):
        self.database = database

    def create(self, user: str, label: str = "") -> tuple[str, ApiToken]:
        """Make a token for `user`. Returns (the secret, shown only now; the stored entry)."""
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        label = " ".join(str(label or "").split())[:MAX_LABEL]
        hint = f"{secret[:len(TOKEN_PREFIX) + 4]}…{secret[-4:]}"
        cursor = self.database.write(
            "INSERT INTO api_tokens (user, label, token_hash, hint, created) VALUES (?, ?, ?, ?, ?)",
            (user, label, token_digest(secret), hint, timestamp()),
        )
        return secret, self.get(user, int(cursor.lastrowid))

    def get(self, user: str, token_id: int) -> ApiToken | None:
        """One of the user's tokens, or None."""
        rows = self.database.read("SELECT * FROM api_tokens WHERE id = ? AND user = ?", (int(token_id), user))
        return _token(rows[0]) if rows else None

    def list(self, user: str) -> list[ApiToken]:
        """The user's tokens, newest first, revoked ones included."""
        rows = self.database.read("SELECT * FROM api_tokens WHERE user = ? ORDER BY id DESC", (user,))
        return [_token(row) for row in rows]

    def authenticate(self, secret: str | None) -> ApiToken | None:
        """The active token with this secret (its last use is recorded), or None."""
        if not secret or not secret.startswith(TOKEN_PREFIX) or len(secret) > 200:
            return None
        digest = token_digest(secret)
        rows = self.database.read("SELECT * FROM api_tokens WHERE token_hash = ? AND revoked IS NULL", (digest,))
        if not rows:
            return None
        self.database.write("UPDATE api_tokens SET last_used = ? WHERE id = ?", (timestamp(), rows[0]["id"]))
        return _token(rows[0])

    def is_revoked(self, secret: str | None) -> bool:
        """True when `secret` is a token that existed and was revoked (for a clearer error than "not valid")."""
        if not secret or len(secret) > 200:
            return False
        rows = self.database.read("SELECT revoked FROM api_tokens WHERE token_hash = ?", (token_digest(secret),))
        return bool(rows) and rows[0]["revoked"] is not None

    def revoke(self, user: str, token_id: int) -> bool:
        """Revoke one of the user's tokens. Returns False when it does not exist, is not theirs or is revoked."""
        cursor = self.database.write(
            "UPDATE api_tokens SET revoked = ? WHERE id = ? AND user = ? AND revoked IS NULL",
            (timestamp(), int(token_id), user),
        )
        return cursor.rowcount == 1

    def revoke_all(self, user: str) -> int:
        """Revoke every active token of `user` (e.g. when the account is removed). Returns how many."""
        cursor = self.database.write("UPDATE api_tokens SET revoked = ? WHERE user = ? AND revoked IS NULL",
                                     (timestamp(), user))
        return int(cursor.rowcount)
