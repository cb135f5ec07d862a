"""Command line: ``python -m segment_warehouse.clustering [--force] [--as-of DATE]``.

``--bench N`` times a recluster of N synthetic customers in a throw-away
warehouse (a temp dir), never touching the configured one.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from dataclasses import asdict


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m segment_warehouse.clustering")
    parser.add_argument("--as-of", help="logical date YYYY-MM-DD (default: today UTC)")
    parser.add_argument("--run-id")
    parser.add_argument("--force", action="store_true", help="recluster even if inputs unchanged")
    parser.add_argument("--bench", type=int, metavar="N", help="time N synthetic customers")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    if args.bench:
        tmp = tempfile.mkdtemp(prefix="segbench_")
        os.environ["SEGMENTS_WAREHOUSE_DIR"] = f"{tmp}/warehouse"
        os.environ["SEGMENTS_REPORTS_DIR"] = f"{tmp}/reports"
        from segment_tools.synthetic_features import (
            make_customer_features,
            write_customer_features,
        )

        from segment_warehouse.warehouse import connect

        con = connect()
        write_customer_features(con, make_customer_features(args.bench, seed=1))
        con.close()
        print(f"synthetic warehouse in {tmp}")

    from segment_warehouse.clustering import recluster

    t0 = time.perf_counter()
    result = recluster(run_id=args.run_id, as_of=args.as_of, force=args.force)
    print(json.dumps(asdict(result), indent=2, default=str))
    print(f"wall time: {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
