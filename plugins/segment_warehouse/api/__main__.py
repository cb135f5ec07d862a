"""``python -m segment_warehouse.api [--host 127.0.0.1] [--port 8000]``: run the decision API."""

from __future__ import annotations

import argparse
import logging


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    from segment_warehouse.api.app import create_app

    parser = argparse.ArgumentParser(prog="python -m segment_warehouse.api", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--log-level", default="info")
    parser.add_argument(
        "--access-log", action="store_true", help="log every request (off: it costs latency)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(message)s"
    )
    # One process: the index lives in memory once; uvloop + httptools are the
    # fast event loop and HTTP parser uvicorn picks when installed.
    uvicorn.run(
        create_app(),
        host=args.host,
        port=args.port,
        workers=1,
        log_level=args.log_level,
        access_log=args.access_log,
    )


if __name__ == "__main__":
    main()
