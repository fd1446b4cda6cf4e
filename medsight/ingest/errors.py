"""The one exception type that leaves the ingest package."""

from __future__ import annotations


class IngestError(ValueError):
    """A file could not be turned into a study.

    The message is written for the radiologist and is safe to show in the UI: it names the
    problem and, where possible, what to do about it. It never contains patient identifiers.
    """
