"""The DICOM node from the command line.

    python -m medsight.node [serve] [--port 11112] [--ae-title MEDSIGHT] [--bind 127.0.0.1] [--user NAME]
                            [--auto-analyse]
    python -m medsight.node echo AE@host:port
    python -m medsight.node send AE@host:port FILE [FILE ...]

`serve` runs the receiver until Ctrl+C or SIGTERM and prints one status line when it starts ("listening on
HOST:PORT"); defaults come from the `MEDSIGHT_NODE_*` settings. Exit status: 0 on success, 1 when a check or
send failed, 2 on a usage or settings problem.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from medsight.config import get_settings
from medsight.node.settings import NodeSettings, RemoteNode


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m medsight.node", description="MedSight Workstation DICOM node.")
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="receive studies (Storage SCP) into the worklist")
    for p in (parser, serve):
        p.add_argument("--port", type=int, help="TCP port (default MEDSIGHT_NODE_PORT or 11112; 0 picks a free one)")
        p.add_argument("--ae-title", help="this workstation's AE title (default MEDSIGHT_NODE_AE_TITLE or MEDSIGHT)")
        p.add_argument("--bind", help="listening address (default 127.0.0.1: this computer only)")
        p.add_argument("--user", help="account that owns received studies (default: the first administrator)")
        p.add_argument("--auto-analyse", action="store_true", default=None, help="analyse studies as they arrive")
    echo = sub.add_parser("echo", help="C-ECHO a remote node")
    echo.add_argument("remote", help="AE@host:port")
    send = sub.add_parser("send", help="C-STORE DICOM files to a remote node")
    send.add_argument("remote", help="AE@host:port")
    send.add_argument("files", nargs="+")
    return parser


def _serve(args, settings) -> int:
    from medsight.node.service import DicomNode
    from medsight.storage import History

    node_settings = NodeSettings.from_settings(settings, ae_title=args.ae_title, port=args.port, bind=args.bind,
                                               user=args.user, auto_analyse=args.auto_analyse)
    history = History(settings.ensure_dirs().db_path)
    node = DicomNode(settings, history, node_settings)
    if node_settings.warning:
        print(f"WARNING: {node_settings.warning}", file=sys.stderr, flush=True)
    node.start()
    print(f"DICOM receiver {node_settings.ae_title} listening on {node.receiver.status.address} for account "
          f"{node.user}; automatic analysis {'on' if node_settings.auto_analyse else 'off'}.", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    node.stop()
    status = node.status()
    print(f"Stopped: {status['received']} received, {status['duplicates']} duplicates ignored, "
          f"{status['failed']} failed.", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = get_settings()
    try:
        if args.command in (None, "serve"):
            return _serve(args, settings)
        remote = RemoteNode.parse(args.remote)
        if args.command == "echo":
            from medsight.node.scu import echo

            result = echo(remote, settings.node_ae_title)
            print(result.message)
            return 0 if result.ok else 1
        from medsight.node.scu import send

        outcome = send(args.files, remote, settings.node_ae_title)
        print(outcome.message)
        return 0 if outcome.ok else 1
    except (ValueError, RuntimeError) as exc:
        print(f"medsight.node: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
