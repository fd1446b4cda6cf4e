"""This workstation as a DICOM node: C-ECHO and C-STORE to a PACS, and a receiver feeding the worklist.

    echo(remote)                  C-ECHO a remote node (`RemoteNode("PACS", "10.0.0.5", 104)`)
    send(datasets, remote)        C-STORE pydicom Datasets or DICOM files to it
    send_results(history, ...)    the same for a study's results, marking it "sent" on the worklist
    DicomNode(settings, history)  the receiver (Storage SCP) and its background worker; `.start()`, `.stop()`
    python -m medsight.node       the receiver as its own process (see `medsight.node.__main__`)

Received instances are de-identified before they are written unless identifiers are kept
(`MEDSIGHT_STORE_IDENTIFIERS`), stored durably before they are acknowledged, then filed by the worker:
ingest, input gate, History, the worklist and (with `MEDSIGHT_NODE_AUTO_ANALYSE`) an analysis.
"""

from medsight.node.scu import EchoResult, SendResult, echo, send
from medsight.node.settings import NodeSettings, RemoteNode, bind_warning, parse_remotes, receiving_user
from medsight.node.service import DicomNode, send_results

__all__ = [
    "DicomNode",
    "EchoResult",
    "NodeSettings",
    "RemoteNode",
    "SendResult",
    "bind_warning",
    "echo",
    "parse_remotes",
    "receiving_user",
    "send",
    "send_results",
]
