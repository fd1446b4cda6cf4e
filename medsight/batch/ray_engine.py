"""The Ray engine: the same scoring on a pool of Ray actors, each holding one copy of the models.

Ray is imported only here, when `--engine ray` is chosen; the app and the local engine do not need it.
Each actor loads the models once through medsight.registry and scores whole chunks of studies (the same
`Scorer.score_chunk` the local engine runs, so rows are the same). The driver keeps at most `in_flight` chunks
per actor queued and hands rows to the journal as each chunk finishes, so neither the driver nor Ray's object
store grows with the archive. The actors read the study files themselves: on a cluster the archive must be at
the same path on every node (a shared mount), and every node runs this checkout with its models folder.

Without `--address` a private single-machine cluster is started for the run and stopped after it, reachable on
loopback only: Ray replaces a node address of 127.0.0.1 by the machine's network address and listens on every
interface unless it runs in its single-machine mode (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, read when ray is
imported), which binds every Ray server to 127.0.0.1. Ray's token authentication stays on as well (Ray 2.60's
default for a local cluster).
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import sys
from collections import deque
from dataclasses import asdict
from typing import Iterable, Iterator

from medsight.batch.results import scoring_settings
from medsight.batch.scoring import Scorer

OBJECT_STORE_BYTES = 200 * 1024 * 1024  # rows are a few kB; the store never holds images
CONNECT_TIMEOUT_S = 5.0
WORKER_START_TIMEOUT_S = 900.0
SINGLE_MACHINE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray binds its servers to 127.0.0.1 only


class RayUnavailable(RuntimeError):
    """The Ray engine cannot run: Ray is not installed, the cluster cannot be reached or the workers failed."""


def import_ray():
    """The ray module, or RayUnavailable saying how to install it."""
    try:
        import ray
    except ImportError:
        raise RayUnavailable("the Ray engine needs the ray package, which the app does not install: "
                             "`.venv/bin/pip install -r requirements-dev.txt` (ray pinned there), "
                             "or score with the local engine (the default)") from None
    return ray


class ScoringWorker:
    """One Ray actor: the models loaded once, then chunk after chunk of files."""

    def __init__(self, batch_size: int, pathology: bool, threads: int):
        import torch

        torch.set_num_threads(threads)  # the CPUs Ray reserved for this actor, so actors do not contend
        self.scorer = Scorer(batch_size=batch_size, pathology=pathology)

    def provenance(self) -> dict:
        return self.scorer.provenance()

    def score(self, files: list[str]) -> list[dict]:
        return [asdict(r) for r in self.scorer.score_chunk(files)]


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Fail fast with a plain reason when a `host:port` or `ray://host:port` address does not answer.

    Ray itself would retry for a minute or more and then raise a long traceback.
    """
    if address == "auto":
        return
    host_port = address.split("://", 1)[-1].rstrip("/")
    host, _, port = host_port.rpartition(":")
    if not host or not port.isdigit():
        raise RayUnavailable(f"not a Ray address: {address!r} (expected ray://HOST:PORT, HOST:PORT or auto)")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise RayUnavailable(f"cannot reach the Ray cluster at {address}: {reason}") from None


def start_local_cluster(num_cpus: int):
    """A private Ray cluster on this machine, loopback only (see the module docstring); returns the ray module."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault(SINGLE_MACHINE_ENV, "0")  # must precede the first `import ray`
    ray = import_ray()
    ray.init(num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
             object_store_memory=OBJECT_STORE_BYTES, logging_level=logging.WARNING, log_to_driver=False)
    return ray


def connect(ray, address: str | None, num_cpus: int) -> bool:
    """Join the cluster at `address`, or start a private local one; True when this call started Ray."""
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        if address:
            check_reachable(address)
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        else:
            start_local_cluster(num_cpus)
    except RayUnavailable:
        raise
    except Exception as exc:  # Ray raises ConnectionError, RuntimeError or its own errors here
        what = f"cannot reach the Ray cluster at {address}" if address else "cannot start a local Ray cluster"
        raise RayUnavailable(f"{what}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    return True


class RayEngine:
    """Scores chunks of studies on a pool of Ray actors (see the module docstring)."""

    name = "ray"

    def __init__(self, *, address: str | None = None, workers: int | None = None, cpus_per_worker: float = 1,
                 batch_size: int = 16, pathology: bool = True, in_flight: int = 2, keep_workers: bool = False):
        self.address, self.requested, self.keep_workers = address, workers, keep_workers
        self.cpus_per_worker, self.in_flight = cpus_per_worker, in_flight
        self.batch_size, self.pathology = batch_size, pathology
        self.actors: list = []
        self._ray = None
        self._started_ray = False
        self._provenance: dict | None = None

    @property
    def workers(self) -> int:
        return len(self.actors)

    def start(self) -> dict:
        """Connect, start the actors and wait until each has loaded its models; returns their provenance."""
        if self.actors and self._provenance is not None:
            return self._provenance  # kept from an earlier run (keep_workers)
        if not self.address:
            os.environ.setdefault(SINGLE_MACHINE_ENV, "0")  # must precede the first `import ray`: loopback only
        ray = self._ray = import_ray()
        local_workers = self.requested or os.cpu_count() or 1
        self._started_ray = connect(ray, self.address, math.ceil(local_workers * self.cpus_per_worker))
        fit = max(1, int(ray.cluster_resources().get("CPU", 1) // self.cpus_per_worker))
        if self.requested and self.requested > fit:
            print(f"Note: the Ray cluster has room for {fit} worker(s) now; the other "
                  f"{self.requested - fit} start when nodes are added", file=sys.stderr)
        n = self.requested or fit
        actor = ray.remote(num_cpus=self.cpus_per_worker)(ScoringWorker)
        threads = max(1, int(self.cpus_per_worker))
        self.actors = [actor.remote(self.batch_size, self.pathology, threads) for _ in range(n)]
        try:
            provenances = ray.get([a.provenance.remote() for a in self.actors], timeout=WORKER_START_TIMEOUT_S)
        except Exception as exc:
            self.release()
            raise RayUnavailable(f"the Ray workers could not load the models: {_cause(exc)}") from None
        settings = {json.dumps(scoring_settings(p, self.pathology), sort_keys=True) for p in provenances}
        if len(settings) > 1:
            self.release()
            raise RayUnavailable("the Ray workers loaded different model weights; every node needs the same "
                                 "models folder so that all rows come from the same models")
        self._provenance = provenances[0]
        return self._provenance

    def score(self, work: Iterable[list[tuple]]) -> Iterator[tuple[list[tuple], list[dict]]]:
        """For each chunk of study keys: the chunk and its rows, in completion order (not submission order)."""
        ray = self._ray
        work = iter(work)
        free = deque(actor for actor in self.actors for _ in range(self.in_flight))
        pending: dict = {}
        while True:
            while free and (chunk := next(work, None)) is not None:
                actor = free.popleft()
                pending[actor.score.remote([key[0] for key in chunk])] = (actor, chunk)
            if not pending:
                return
            done, _ = ray.wait(list(pending), num_returns=1)
            actor, chunk = pending.pop(done[0])
            try:
                rows = ray.get(done[0])
            except Exception as exc:
                raise RayUnavailable(f"a Ray worker failed: {_cause(exc)}") from None
            free.append(actor)
            yield chunk, rows

    def stop(self) -> None:
        """End of a run: release the workers unless they are kept for the next run (keep_workers)."""
        if not self.keep_workers:
            self.release()

    def release(self) -> None:
        """Kill the actors (and stop the local cluster, when this engine started it)."""
        self._provenance = None
        if self._ray is None:
            return
        for actor in self.actors:
            self._ray.kill(actor)
        self.actors = []
        if self._started_ray:
            self._ray.shutdown()
            self._started_ray = False


def _cause(exc: BaseException) -> str:
    """The first line of the innermost error Ray wrapped (the worker's own exception, not Ray's framing)."""
    inner = getattr(exc, "cause", None) or exc
    text = str(inner).strip().splitlines()
    return text[-1] if text else type(inner).__name__
