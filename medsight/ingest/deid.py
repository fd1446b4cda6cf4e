"""De-identification for ingest; the implementation lives in :mod:`medsight.deid`."""

from medsight.deid import TECHNICAL_TAGS, deidentify_dataset, pseudonym, technical_metadata

__all__ = ["TECHNICAL_TAGS", "deidentify_dataset", "pseudonym", "technical_metadata"]
