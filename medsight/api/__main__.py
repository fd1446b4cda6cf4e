"""`python -m medsight.api`: serve the local HTTP API on this machine only (127.0.0.1 by default)."""

from __future__ import annotations

import argparse
import sys

DEFAULT_PORT = 8502


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, warm the image models and serve until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m medsight.api", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: reachable from this machine only)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument("--no-preload", action="store_true", help="load the image models on the first call instead")
    args = parser.parse_args(argv)

    import uvicorn

    from medsight import registry
    from medsight.api.app import create_app
    from medsight.api.limits import LOOPBACK_HOSTS
    from medsight.api.service import IMAGE_SLOTS

    hosts = LOOPBACK_HOSTS | ({args.host} if args.host not in ("0.0.0.0", "::") else set())
    app = create_app(allowed_hosts=frozenset(hosts))
    if not args.no_preload:
        registry.all_slots()  # the slot modules' imports, so the first health call answers at once
        for slot in IMAGE_SLOTS:
            app.service.model(slot)
    print(f"MedSight API on http://{args.host}:{args.port}/v1/health (OpenAPI at /v1/openapi.json)",
          file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False,
                server_header=False, date_header=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
