"""Failed sign-in counters and lockouts, kept per account key (and per browser) for `medsight.auth`."""

from __future__ import annotations

from medsight.storage.database import Database


class LoginLockout:
    """The `login_state` table: one row per account key that has failed to sign in."""

    def __init__(self, database: Database):
        self.database = database

    def state(self, account: str) -> dict:
        """Failed-login counter and lockout of one account key (zeros when it never failed)."""
        rows = self.database.read("SELECT * FROM login_state WHERE account = ?", (account,))
        if not rows:
            return {"account": account, "failed_count": 0, "last_failed": None, "locked_until": None}
        return dict(rows[0])

    def set(self, account: str, failed_count: int, last_failed: str | None, locked_until: str | None) -> None:
        """Store the counter, the time of the last failure and the end of the lockout (ISO times or None)."""
        self.database.write(
            "INSERT INTO login_state (account, failed_count, last_failed, locked_until) VALUES (?, ?, ?, ?)"
            " ON CONFLICT(account) DO UPDATE SET failed_count = excluded.failed_count,"
            " last_failed = excluded.last_failed, locked_until = excluded.locked_until",
            (account, int(failed_count), last_failed, locked_until),
        )

    def clear(self, account: str) -> None:
        """Forget the failures of one account key (after a good sign-in or an unlock)."""
        self.database.write("DELETE FROM login_state WHERE account = ?", (account,))
