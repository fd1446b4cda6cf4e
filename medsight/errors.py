"""Unexpected failures in the app: a short reference for the user, the code path for the server log.

The log keeps the stack and the exception type but never the exception's message, which can quote file
contents or names that identify a patient.
"""

from __future__ import annotations

import logging
import secrets
import traceback

log = logging.getLogger("medsight.app")


def new_reference() -> str:
    """A short id the user can quote and the administrator can find in the server log."""
    return secrets.token_hex(4).upper()


def log_failure(exc: BaseException, message: str) -> str:
    """Log an unexpected exception (stack and type, not its message) under a new reference; return it."""
    ref = new_reference()
    stack = "".join(traceback.format_tb(exc.__traceback__))
    log.error("error ref %s: %s\n%sException type: %s.%s", ref, message, stack,
              type(exc).__module__, type(exc).__qualname__)
    return ref


def log_build_failure(file_name: str, exc: BaseException) -> str:
    """Log that a download (PDF, PNG, ...) could not be built, by file type and exception type; return the reference."""
    ref = new_reference()
    log.error("error ref %s: %s could not be built (%s.%s)", ref, file_name.rsplit(".", 1)[-1].upper(),
              type(exc).__module__, type(exc).__qualname__)
    return ref
