"""``--delta-day``: one more day of deliveries on top of an existing landing zone.

The existing people are regenerated from the seed (cheap: no history), get a
day of new sessions and orders, some CRM updates (consent withdrawals, moves),
and a few new people sign up. Truth files are updated in place.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from . import vocab as V
from .core import (
    CHUNK_PERSONS,
    TRUTH_FILES,
    GenerationSummary,
    Params,
    _chunk,
    _erasure_candidates,
    _persona_of,
    _Truth,
    _write_bad_truth,
    _write_erasure,
    _Writer,
)
from .population import Population, make_population
from .timeline import Timeline

DAY = 86_400_000
TRUTH_KEYS = {"persons.csv": "person_id", "crm_contacts.csv": "contact_id",
              "anonymous_ids.csv": "anonymous_id", "orders.csv": "order_id"}


def _crm_updates(pop: Population, rng: np.random.Generator, tl: Timeline,
                 rate: float = 0.005) -> tuple[Population, np.ndarray]:
    """Append today's CRM updates; returns the population and the rows to deliver."""
    order = np.lexsort((pop.c_updated, pop.c_key))
    if len(order) == 0:
        return pop, np.zeros(0, np.int64)
    latest = order[np.r_[pop.c_key[order][1:] != pop.c_key[order][:-1], True]]
    pick = latest[rng.random(len(latest)) < rate]
    k = len(pick)
    fields = {f.name: getattr(pop, f.name) for f in dataclasses.fields(pop)
              if f.name.startswith("c_")}
    new = {name: arr[pick].copy() for name, arr in fields.items()}
    new["c_updated"] = tl.t0 + rng.integers(0, DAY, k)
    new["c_is_update"][:] = True
    withdraw = rng.random(k) < 0.7  # most updates today are consent withdrawals
    new["c_consent"] = np.where(withdraw, 2, new["c_consent"]).astype(np.int8)
    new["c_city"] = np.where(withdraw, new["c_city"], new["c_city"] + 1)
    n_old = len(pop.c_key)
    pop = dataclasses.replace(pop, **{n: np.concatenate([fields[n], new[n]]) for n in fields})
    return pop, np.arange(n_old, n_old + k)


def _merge_truth(truth_dir: Path, tmp: Path) -> None:
    """Fold the delta's truth rows into the existing files (latest version wins)."""
    for name in TRUTH_FILES:
        new_p = tmp / name
        if not new_p.exists():
            continue
        old_p = truth_dir / name
        new = pd.read_csv(new_p, dtype=str, keep_default_na=False)
        if not old_p.exists():
            shutil.move(new_p, old_p)
            continue
        old = pd.read_csv(old_p, dtype=str, keep_default_na=False)
        both = pd.concat([old, new], ignore_index=True)
        key = TRUTH_KEYS.get(name)
        if key is not None:
            # keep first-seen row order, take the latest values
            order = both[key].drop_duplicates(keep="first")
            both = both.drop_duplicates(key, keep="last").set_index(key).loc[order].reset_index()
        both.to_csv(old_p, index=False)


def generate_delta(p: Params, out: Path, truth_dir: Path, summary: GenerationSummary,
                   erasure_requests: int, progress: bool) -> None:
    meta_p = truth_dir / "generation.json"
    if not meta_p.exists():
        raise FileNotFoundError(f"{meta_p} not found: run the full generation first")
    meta = json.loads(meta_p.read_text())
    if (meta["seed"], meta["customers"]) != (p.seed, p.customers):
        raise ValueError(f"landing zone was made with seed={meta['seed']} "
                         f"customers={meta['customers']}; pass the same values")
    p = dataclasses.replace(p, start=date.fromisoformat(meta["start_date"]), days=meta["days"],
                            window_days=meta["window_days"],
                            visitor_ratio=meta["visitor_ratio"])
    hist = Timeline(p.start, p.days, p.window_days)
    idx = len(meta["delta_days"])
    day0 = p.start + timedelta(days=p.days + idx)
    tl = Timeline(day0, 1, 1, is_delta=True)  # files named day0 + 1
    tmp = truth_dir / ".delta_tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    writer = _Writer(out, tmp, p, [p.seed, 51, idx], summary)
    truth = _Truth(tmp, append=False)
    n_chunks = -(-p.total_persons // CHUNK_PERSONS)
    pool: list[tuple] = []
    with tqdm(total=n_chunks + 1, desc="delta day", unit="chunk", file=sys.stderr,
              disable=not progress) as bar:
        for c in range(n_chunks):
            pids = np.arange(c * CHUNK_PERSONS, min((c + 1) * CHUNK_PERSONS, p.total_persons))
            personas = _persona_of(p.seed, c, pids, p.customers)
            pop = make_population(p.seed, c, pids, personas, hist)
            rng = np.random.default_rng([p.seed, 31, idx, c])
            pop, upd_rows = _crm_updates(pop, rng, tl)
            _chunk(p, tl, c, pids, personas, writer, truth, bar, summary, pop=pop,
                   stream=30 + idx, order_key_base=400 + idx, id_space=2 + idx,
                   extra_crm_rows=upd_rows)
        # New sign-ups today.
        m = max(1, p.customers // 200)
        pids = p.total_persons + idx * m + np.arange(m)
        rng = np.random.default_rng([p.seed, 32, idx])
        personas = np.where(rng.random(m) < 0.8, V.NEW, V.MOBILE).astype(np.int8)
        cid = 10_000 + idx
        pop = make_population(p.seed, cid, pids, personas, tl, stream=11)
        pop = _chunk(p, tl, cid, pids, personas, writer, truth, bar, summary, pop=pop,
                     id_space=2 + idx, file_no=n_chunks)
        pool += _erasure_candidates(pop, np.random.default_rng([p.seed, 42, idx]),
                                    erasure_requests)
    summary.erasure_requests = _write_erasure(writer, truth, pool, erasure_requests, p.seed,
                                              tl.delivery_date(0), f"D{idx + 1}")
    if p.bad_rows:
        writer.write_bad_file(tl.delivery_date(0))
    writer.finish()
    _write_bad_truth(truth, writer)
    truth.close()
    _merge_truth(truth_dir, tmp)
    shutil.rmtree(tmp)
    meta["delta_days"].append(str(tl.delivery_date(0)))
    meta_p.write_text(json.dumps(meta, indent=2) + "\n")
