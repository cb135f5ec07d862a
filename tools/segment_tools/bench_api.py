"""Bounded local load test of the decision API (127.0.0.1 only).

    python -m segment_tools.bench_api --customers 1000000 \\
        --requests 30000 --concurrency 1,8,32 --markdown /tmp/latency.md

1. Builds a synthetic warehouse of ``--customers`` customers in a temp dir
   (profiles, rule segments, cluster segments, predictions, ~1.4 anonymous ids
   per customer; deterministic), runs the real ``decide`` over the example
   rules file and publishes the snapshot with the real ``publish_snapshot``.
   ``--snapshot PATH`` skips this and serves an existing analytics.duckdb.
2. Starts ``python -m segment_warehouse.api`` pinned to one CPU core
   (``sched_setaffinity``) and waits until it answers.
3. For each concurrency level: a closed-loop client (asyncio, one keep-alive
   HTTP/1.1 connection per concurrent user, in this process, pinned to the
   other core when there is one) sends a fixed number of requests: 80% known
   customer ids, 15% anonymous ids, 5% unknown ids, over every slot. Latency
   is measured client-side per request (send -> full response).
4. Prints a Markdown table (p50/p90/p99/max latency, requests/s, errors) and
   the server's start-up (snapshot load) time and resident memory.

The load is bounded by ``--requests`` per level and only ever targets
127.0.0.1; nothing else is contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb

REPO_ROOT = Path(__file__).resolve().parents[2]


def _synthetic_warehouse(db: Path, customers: int) -> None:
    """Marts and segments shaped like the pipeline's, generated in SQL (seeded)."""
    con = duckdb.connect(str(db))
    try:
        for schema in ("marts", "segments", "intermediate", "personalisation", "audit"):
            con.execute(f"create schema if not exists {schema}")
        con.execute("select setseed(0.42)")
        con.execute(
            f"""
            create table marts.customer_profiles as
            with base as (
                select i, 'cus_' || substr(md5(i::varchar), 1, 16) as customer_id,
                       random() as u1, random() as u2, random() as u3, random() as u4
                from range({int(customers)}) t(i)
            )
            select customer_id,
                   case when u1 < 0.6 then true when u1 < 0.8 then false end as marketing_consent,
                   case when u2 < 0.25 then 'prospect' when u2 < 0.35 then 'new'
                        when u2 < 0.65 then 'active' when u2 < 0.8 then 'at_risk'
                        else 'churned' end as lifecycle_stage,
                   case when u2 < 0.25 then 'No purchases' when u3 < 0.12 then 'Champions'
                        when u3 < 0.25 then 'Loyal' when u3 < 0.4 then 'At risk'
                        when u3 < 0.6 then 'Hibernating' else 'Lost' end as rfm_segment,
                   case when u4 < 0.2 then 'high' when u4 < 0.5 then 'medium'
                        when u4 < 0.7 then 'low' else 'dormant' end as engagement_tier,
                   case when u2 < 0.25 then 0 else 1 + floor(u3 * 8)::bigint end as orders_count,
                   case when u2 < 0.25 then 0 else round(20 + u4 * 900, 2) end
                       as lifetime_revenue,
                   case when u2 < 0.25 then null else round(20 + u4 * 200, 2) end
                       as avg_order_value,
                   1 + floor(u3 * 5)::integer as recency_score,
                   1 + floor(u4 * 5)::integer as frequency_score,
                   1 + floor(u1 * 5)::integer as monetary_score,
                   floor(u4 * 40)::bigint as sessions_count,
                   floor(u4 * 200)::bigint as page_views_count,
                   'GB' as country,
                   case when u2 < 0.25 then null else floor(u3 * 400)::bigint end
                       as days_since_last_order
            from base
            """
        )
        con.execute(
            "create table marts.customer_rule_segments as "
            "select customer_id, days_since_last_order from marts.customer_profiles"
        )
        con.execute(
            """
            create table segments.customer_segments as
            select customer_id, (hash(customer_id) % 7)::integer as segment_id,
                   ['Lapsed', 'Discount-driven', 'Browsers, no purchase', 'Weekend buyers',
                    'Mobile-first', 'High-value loyal', 'Cart abandoners'][
                       1 + (hash(customer_id) % 7)::integer] as segment_name,
                   'bench' as run_id
            from marts.customer_profiles where marketing_consent is distinct from false
            """
        )
        con.execute(
            """
            create table segments.customer_predictions as
            select customer_id, random() * 0.6 as purchase_probability_30d,
                   case when orders_count > 0 then random() end as churn_probability
            from segments.customer_segments join marts.customer_profiles using (customer_id)
            """
        )
        con.execute(
            """
            create table marts.identity_map as
            select 'analytics' as source,
                   substr(md5('anon' || customer_id || k::varchar), 1, 8) || '-' ||
                   substr(md5('anon' || customer_id || k::varchar), 9, 4) || '-' ||
                   substr(md5('anon' || customer_id || k::varchar), 13, 4) || '-' ||
                   substr(md5('anon' || customer_id || k::varchar), 17, 4) || '-' ||
                   substr(md5('anon' || customer_id || k::varchar), 21, 12) as source_id,
                   customer_id
            from marts.customer_profiles, range(2) r(k)
            where k = 0 or hash(customer_id) % 5 < 2
            """
        )
    finally:
        con.close()


def build_snapshot(workdir: Path, customers: int) -> tuple[Path, dict[str, float]]:
    """Synthetic warehouse -> real decide -> real publish. Returns (snapshot, timings)."""
    os.environ["SEGMENTS_WAREHOUSE_DIR"] = str(workdir / "warehouse")
    os.environ["SEGMENTS_REPORTS_DIR"] = str(workdir / "reports")
    os.environ.setdefault("SEGMENTS_CONTENT_RULES",
                          str(REPO_ROOT / "personalisation" / "content_rules.yml"))
    from segment_warehouse.config import get_settings
    from segment_warehouse.personalisation import decide
    from segment_warehouse.publish import publish_snapshot

    settings = get_settings()
    settings.warehouse_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    _synthetic_warehouse(settings.warehouse_db, customers)
    timings["synthetic warehouse"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = decide(run_id="bench", as_of="2026-12-05", settings=settings)
    timings["decide"] = time.perf_counter() - t0
    timings["decisions"] = result.decisions
    t0 = time.perf_counter()
    publish_snapshot(run_id="bench", settings=settings)
    timings["publish"] = time.perf_counter() - t0
    return settings.analytics_db, timings


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sample_ids(snapshot: Path, n: int, seed: int) -> tuple[list[str], list[str], list[str]]:
    con = duckdb.connect(str(snapshot), read_only=True)
    try:
        customers = [r[0] for r in con.execute(
            "select customer_id from marts.customer_profiles "
            f"using sample reservoir({int(n)} rows) repeatable ({int(seed)})").fetchall()]
        anonymous = [r[0] for r in con.execute(
            "select source_id from marts.identity_map where source = 'analytics' "
            f"using sample reservoir({int(n)} rows) repeatable ({int(seed)})").fetchall()]
        slots = [r[0] for r in con.execute(
            "select slot_id from personalisation.content_slots order by position").fetchall()]
    finally:
        con.close()
    return customers, anonymous, slots


def _paths(snapshot: Path, count: int, seed: int = 7) -> list[bytes]:
    customers, anonymous, slots = _sample_ids(snapshot, 20_000, seed)
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        slot = rng.choice(slots)
        u = rng.random()
        if u < 0.80:
            query = f"customer_id={rng.choice(customers)}"
        elif u < 0.95:
            query = f"anonymous_id={rng.choice(anonymous)}"
        else:
            query = f"customer_id=cus_unknown{rng.randrange(10**9)}"
        out.append(
            f"GET /v1/decisions?{query}&slot={slot} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
        )
    return out


@dataclass
class LevelResult:
    concurrency: int
    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float]
    server_cpu_seconds: float = float("nan")

    def pct(self, q: float) -> float:
        data = sorted(self.latencies_ms)
        return data[min(len(data) - 1, int(q * len(data)))] if data else float("nan")


async def _user(port: int, paths: list[bytes], lat: list[float], errors: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for request in paths:
            t0 = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            lat.append((time.perf_counter() - t0) * 1000)
            if not head.startswith(b"HTTP/1.1 200"):
                errors[0] += 1
    finally:
        writer.close()


async def _level(port: int, paths: list[bytes], concurrency: int) -> LevelResult:
    lat: list[float] = []
    errors = [0]
    chunks = [paths[i::concurrency] for i in range(concurrency)]
    t0 = time.perf_counter()
    await asyncio.gather(*(_user(port, c, lat, errors) for c in chunks))
    return LevelResult(concurrency, len(paths), errors[0], time.perf_counter() - t0, lat)


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process (robust to other load on a shared machine)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--snapshot", type=Path, help="serve this analytics.duckdb instead")
    parser.add_argument("--requests", type=int, default=30_000, help="per concurrency level")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--warmup", type=int, default=2_000)
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    parser.add_argument("--workdir", type=Path, help="keep the synthetic warehouse here")
    parser.add_argument(
        "--nice", type=int, default=0,
        help="scheduling niceness for server and client (negative needs root): on a shared "
             "machine, approximates having the cores to themselves",
    )
    args = parser.parse_args(argv)
    levels = [int(x) for x in args.concurrency.split(",")]

    tmp = None
    timings: dict[str, float] = {}
    if args.snapshot:
        snapshot = args.snapshot
    else:
        workdir = args.workdir or Path(tmp := tempfile.mkdtemp(prefix="bench-api-"))
        print(f"building a synthetic warehouse of {args.customers:,} customers in {workdir}")
        snapshot, timings = build_snapshot(workdir, args.customers)
        for k, v in timings.items():
            print(f"  {k}: {v:,.1f}" + ("" if k == "decisions" else " s"))

    con = duckdb.connect(str(snapshot), read_only=True)
    (customers,) = con.execute("select count(*) from marts.customer_profiles").fetchone()
    (decisions,) = con.execute(
        "select count(*) from personalisation.content_decisions").fetchone()
    (anonymous,) = con.execute(
        "select count(*) from marts.identity_map where source = 'analytics'").fetchone()
    con.close()
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, client_cpus = cpus[0], (cpus[1:] or cpus[:1])
    port = _free_port()
    env = {**os.environ, "SEGMENTS_WAREHOUSE_DIR": str(snapshot.parent)}
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "segment_warehouse.api", "--port", str(port),
         "--log-level", "warning"],
        env=env,
        preexec_fn=lambda: (os.sched_setaffinity(0, {server_cpu}),
                            os.setpriority(os.PRIO_PROCESS, 0, args.nice)),
    )
    try:
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
                    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    if s.recv(64).startswith(b"HTTP/1.1 200"):
                        break
            except OSError:
                pass
            if proc.poll() is not None:
                raise SystemExit("the API exited during start-up")
            time.sleep(0.2)
        startup = time.perf_counter() - t0
        rss = _rss_mb(proc.pid)
        os.sched_setaffinity(0, set(client_cpus))
        os.setpriority(os.PRIO_PROCESS, 0, args.nice)
        paths = _paths(snapshot, args.requests + args.warmup)
        asyncio.run(_level(port, paths[: args.warmup], 4))
        results = []
        for c in levels:
            cpu0 = _cpu_seconds(proc.pid)
            result = asyncio.run(_level(port, paths[args.warmup:], c))
            result.server_cpu_seconds = _cpu_seconds(proc.pid) - cpu0
            results.append(result)
        with open("/proc/loadavg") as fh:
            loadavg = fh.read().split()[0]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if tmp:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)

    lines = [
        f"Snapshot: {customers:,} customers, {decisions:,} decisions, {anonymous:,} anonymous "
        f"ids. Server: one uvicorn process pinned to 1 core; start-up incl. snapshot load "
        f"{startup:.1f} s, resident memory {rss:,.0f} MiB. Client: closed loop, keep-alive, "
        f"{args.requests:,} requests per row (80% customer_id, 15% anonymous_id, 5% unknown).",
        "",
        f"Machine: {os.cpu_count()} cores shared with other work (1-min load average "
        f"{loadavg} at the end; server and client niceness {args.nice}): latencies include "
        "waiting for a CPU; server CPU per request "
        "is what one request costs the server, so 1 / that is the capacity of one "
        "dedicated core.",
        "",
        "| concurrent clients | requests/s | p50 ms | p90 ms | p99 ms | max ms | errors "
        "| server CPU µs/request | capacity of 1 core (req/s) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.concurrency} | {r.requests / r.seconds:,.0f} | {r.pct(0.50):.2f} | "
            f"{r.pct(0.90):.2f} | {r.pct(0.99):.2f} | {max(r.latencies_ms):.2f} | {r.errors} "
            f"| {1e6 * r.server_cpu_seconds / r.requests:,.0f} "
            f"| {r.requests / max(r.server_cpu_seconds, 1e-9):,.0f} |"
        )
        assert len(r.latencies_ms) == r.requests, "every request must be answered"
    if timings:
        lines += ["", "Pipeline stages on the synthetic warehouse: " + ", ".join(
            f"{k} {v:,.1f} s" for k, v in timings.items() if k != "decisions") + "."]
    text = "\n".join(lines)
    print(text)
    print(f"(mean of level 1: {statistics.mean(results[0].latencies_ms):.2f} ms)")
    if args.markdown:
        args.markdown.write_text(text + "\n")


if __name__ == "__main__":
    main()
