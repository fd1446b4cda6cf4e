"""Batch scoring of a folder of studies: `python -m medsight.batch FOLDER [--engine ray]` (see medsight.batch.cli).

Layout: `scoring` (rows, the gate/domain rule and the per-chunk scoring every engine runs), `results` (the
journal rows stream into, resume, and the CSV/JSON tables), `local` (the default engine, this process),
`ray_engine` (a pool of Ray actors; ray is imported only there), `cli` (the command line).
"""

from medsight.batch.cli import main, make_engine, score_archive
from medsight.batch.local import LocalEngine
from medsight.batch.ray_engine import RayEngine, RayUnavailable
from medsight.batch.results import ResultsJournal, study_key, write_results
from medsight.batch.scoring import BatchRow, Scorer, find_studies, score_folder

__all__ = ["BatchRow", "LocalEngine", "RayEngine", "RayUnavailable", "ResultsJournal", "Scorer", "find_studies", "main",
           "make_engine", "score_archive", "score_folder", "study_key", "write_results"]
