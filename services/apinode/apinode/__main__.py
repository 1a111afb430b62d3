"""Command line: ``python -m apinode serve services/customer-features --host 127.0.0.1 --port 8081``."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from .definition import DefinitionError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m apinode", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="serve one service definition")
    serve_parser.add_argument("service_dir", help="folder holding service.yaml")
    serve_parser.add_argument("--host", default=os.environ.get("APINODE_HOST", "127.0.0.1"))
    serve_parser.add_argument("--port", type=int, default=int(os.environ.get("APINODE_PORT", "8080")))
    serve_parser.add_argument("--log-level", default=os.environ.get("APINODE_LOG_LEVEL", "info"))
    check_parser = commands.add_parser("check", help="validate a service definition and exit")
    check_parser.add_argument("service_dir")
    commands.add_parser("key-id", help="print the query records' id of the API key read from stdin")
    args = parser.parse_args(argv)
    if args.command == "key-id":
        from .audit import key_id

        print(key_id(sys.stdin.readline().strip()))
        return 0
    logging.basicConfig(
        level=getattr(logging, args.__dict__.get("log_level", "info").upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s trace=%(trace_id)s: %(message)s",
    )
    from .tracing import TraceLogFilter

    for handler in logging.getLogger().handlers:
        handler.addFilter(TraceLogFilter())
    from .settings import load_settings

    try:
        settings = load_settings(args.service_dir, os.environ)
    except DefinitionError as error:
        print(f"apinode: invalid service definition: {error}", file=sys.stderr)
        return 2
    if args.command == "check":
        print(f"{settings.definition.id}: ok")
        return 0
    from .server import serve

    return serve(settings, args.host, args.port, args.log_level.lower())


if __name__ == "__main__":
    sys.exit(main())
