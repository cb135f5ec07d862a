"""People, their devices and their CRM records, as numpy arrays.

A chunk of persons is generated from its own random stream
(``seed, "population", chunk``), so ``--delta-day`` can regenerate the exact
same people without regenerating their history.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

import numpy as np

from . import vocab as V
from .timeline import Timeline

DAY = 86_400_000
KEYS_PER_PERSON = 4  # contact / device keys: pid * 4 + k
EMAIL_MULT = 7919


def _ascii(s: str) -> str:
    s = unicodedata.normalize("NFKD", s).encode("ascii", "ignore").decode()
    return s.replace("'", "").replace(" ", "").lower()


FIRST_ALL = V.FIRST_NAMES_F + V.FIRST_NAMES_M
FIRST_ASCII = tuple(_ascii(x) for x in FIRST_ALL)
LAST_ASCII = tuple(_ascii(x) for x in V.LAST_NAMES)
N_F = len(V.FIRST_NAMES_F)


@dataclass
class Population:
    """Column arrays; persons are indexed 0..n-1 within the chunk."""

    pid: np.ndarray  # global person index
    persona: np.ndarray
    in_crm: np.ndarray
    country: np.ndarray
    first: np.ndarray
    last: np.ndarray
    birth_day: np.ndarray  # days since epoch
    domain: np.ndarray
    email_style: np.ndarray
    first_seen: np.ndarray  # ms
    phone_nsn: np.ndarray
    city: np.ndarray
    consent: np.ndarray  # 0 unknown, 1 true, 2 false
    n_devices: np.ndarray
    # devices (one row per device)
    dev_person: np.ndarray
    dev_key: np.ndarray
    dev_type: np.ndarray
    dev_ua: np.ndarray
    dev_ip: np.ndarray
    # contact records (one row per exported version, updates included)
    c_person: np.ndarray
    c_key: np.ndarray
    c_k: np.ndarray  # 0 = primary, 1.. = duplicate record of the same person
    c_is_update: np.ndarray
    c_created: np.ndarray
    c_updated: np.ndarray
    c_email_variant: np.ndarray  # 0 lower, 1 mixed case, 2 spaces, 3 missing, 4 placeholder
    c_placeholder: np.ndarray
    c_phone_fmt: np.ndarray  # -1 missing
    c_phone_nsn: np.ndarray
    c_country: np.ndarray
    c_city: np.ndarray
    c_last: np.ndarray
    c_birth_missing: np.ndarray
    c_name_upper: np.ndarray
    c_consent: np.ndarray
    c_gender_fmt: np.ndarray
    c_ts_style: np.ndarray
    c_tz: np.ndarray
    household_of: np.ndarray  # per person: person index whose phone is shared, else -1

    @property
    def n(self) -> int:
        return len(self.pid)

    def primary_key(self) -> np.ndarray:
        return self.pid * KEYS_PER_PERSON


def email_number(pid: np.ndarray) -> np.ndarray:
    # Unique per person below 10 M persons; looks like the digits people add.
    return (np.asarray(pid, dtype=np.int64) * EMAIL_MULT + 11) % 10_000_000


def _phone_nsn(rng: np.random.Generator, country: np.ndarray) -> np.ndarray:
    n = len(country)
    nsn = np.zeros(n, dtype=np.int64)
    us = (country == 0) | (country == 4)
    area = rng.integers(201, 990, n)
    nsn[us] = (area * 10_000_000 + 5_550_000 + rng.integers(0, 10_000, n))[us]
    # (country, leading digits, total digits): mobile-like national numbers
    leads = {1: (7, 10), 2: (15, 10), 3: (6, 9), 5: (4, 9), 6: (6, 9), 7: (70, 9), 8: (90, 10)}
    for c, (lead, nd) in leads.items():
        m = country == c
        rest = nd - len(str(lead))
        nsn[m] = lead * 10**rest + rng.integers(0, 10**rest, int(m.sum()))
    return nsn


def make_population(seed: int, chunk: int, pids: np.ndarray, personas: np.ndarray,
                    tl: Timeline, stream: int = 10) -> Population:
    rng = np.random.default_rng([seed, stream, chunk])
    n = len(pids)
    persona = personas.astype(np.int8)
    customer = persona != V.VISITOR
    in_crm = customer & ((persona == V.BROWSER) | (rng.random(n) < 0.85))
    cw = np.array([c[4] for c in V.COUNTRIES])
    country = rng.choice(len(V.COUNTRIES), n, p=cw / cw.sum()).astype(np.int8)
    female = rng.random(n) < 0.5
    first = np.where(female, rng.integers(0, N_F, n), N_F + rng.integers(0, N_F, n))
    last = rng.integers(0, len(V.LAST_NAMES), n)
    birth_day = rng.integers(-20 * 365, 35 * 365, n)  # ~1950 .. 2005
    domain = rng.integers(0, len(V.EMAIL_DOMAINS), n)
    email_style = rng.integers(0, 3, n)
    # First seen: before the history for most, within the last 30 days for "new".
    first_seen = tl.t0 - rng.integers(1, 1000, n) * DAY - rng.integers(0, DAY, n)
    is_new = persona == V.NEW
    first_seen[is_new] = (tl.t1 - rng.integers(2 * DAY, 30 * DAY, n))[is_new]
    if tl.is_delta:
        first_seen[:] = tl.t0 + rng.integers(0, DAY // 2, n)
    phone = _phone_nsn(rng, country)
    city = rng.integers(0, 64, n)  # reduced modulo the country's city count when rendered
    consent = rng.choice(3, n, p=[0.15, 0.65, 0.20]).astype(np.int8)

    # Households: another CRM person shares this person's phone, surname and city,
    # but has their own first name and birth date (must NOT be merged).
    household_of = np.full(n, -1, dtype=np.int64)
    crm_idx = np.flatnonzero(in_crm)
    if len(crm_idx) >= 4:
        nb = max(1, round(len(crm_idx) * 0.015))
        pairs = rng.choice(crm_idx, size=(nb, 2), replace=False)
        a, b = pairs[:, 0], pairs[:, 1]
        household_of[b] = a
        phone[b], country[b], city[b], last[b] = phone[a], country[a], city[a], last[a]
        same_first = first[b] == first[a]
        first[b[same_first]] = (first[b[same_first]] + 1) % len(FIRST_ALL)
        birth_day[b] = birth_day[a] + rng.integers(400, 9000, nb)

    # Devices: 1-3 per person, types driven by the persona's mobile share.
    n_dev = rng.choice([1, 2, 3], n, p=[0.5, 0.35, 0.15])
    n_dev[persona == V.VISITOR] = 1
    dev_person = np.repeat(np.arange(n), n_dev)
    dev_k = np.arange(len(dev_person)) - np.repeat(np.cumsum(n_dev) - n_dev, n_dev)
    mshare = np.array([p[8] for p in V.PERSONA_PARAMS])[persona[dev_person]]
    u = rng.random(len(dev_person))
    dev_type = np.where(u < mshare * 0.8, 0, np.where(u < mshare, 2, 1)).astype(np.int8)
    n_ua = np.array([len(x) for x in V.USER_AGENTS])
    dev_ua = (rng.integers(0, 1 << 30, len(dev_person)) % n_ua[dev_type]).astype(np.int16)
    dev_ip = rng.integers(0x0B000000, 0xDF000000, len(dev_person), dtype=np.int64)
    dev_key = pids[dev_person] * KEYS_PER_PERSON + dev_k

    # CRM contact records: primaries, duplicate records, later updates.
    n_c = np.where(in_crm, 1 + (rng.random(n) < 0.07) + (rng.random(n) < 0.012), 0)
    c_person = np.repeat(np.arange(n), n_c)
    c_k = np.arange(len(c_person)) - np.repeat(np.cumsum(n_c) - n_c, n_c)
    m = len(c_person)
    dup = c_k > 0
    created = first_seen[c_person] + rng.integers(0, DAY, m)
    span = np.maximum(tl.t1 - np.maximum(first_seen[c_person], tl.t0), DAY)
    created[dup] = (np.maximum(first_seen[c_person], tl.t0) + (rng.random(m) * span))[dup]
    ev = rng.choice(4, m, p=[0.85, 0.06, 0.04, 0.05])
    ev[dup] = rng.choice(4, m, p=[0.3, 0.3, 0.2, 0.2])[dup]
    placeholder = np.full(m, -1, dtype=np.int8)
    ph_mask = (~dup) & (rng.random(m) < 0.015)
    placeholder[ph_mask] = rng.integers(0, len(V.PLACEHOLDER_EMAILS), int(ph_mask.sum()))
    ev[ph_mask] = 4
    phone_fmt = rng.choice(6, m, p=[0.35, 0.13, 0.13, 0.13, 0.13, 0.13]).astype(np.int8)
    phone_fmt[rng.random(m) < 0.12] = -1
    # A duplicate without an email keeps its phone so it stays resolvable.
    phone_fmt[dup & (ev == 3) & (phone_fmt < 0)] = 0
    c_consent = consent[c_person].copy()
    c_consent[dup] = rng.choice(3, m, p=[0.3, 0.5, 0.2])[dup]
    c = _Contacts(
        person=c_person, key=pids[c_person] * KEYS_PER_PERSON + c_k, k=c_k,
        is_update=np.zeros(m, bool), created=created, updated=created.copy(),
        email_variant=ev.astype(np.int8), placeholder=placeholder, phone_fmt=phone_fmt,
        phone_nsn=phone[c_person], country=country[c_person], city=city[c_person],
        last=last[c_person], birth_missing=dup & (rng.random(m) < 0.3),
        name_upper=dup & (rng.random(m) < 0.15), consent=c_consent,
        gender_fmt=rng.integers(0, 12, m).astype(np.int8),
        ts_style=rng.choice(3, m, p=[0.5, 0.3, 0.2]).astype(np.int8),
        tz=rng.integers(0, len(V.TZ_OFFSETS_MIN), m).astype(np.int8),
    )
    # Updates in a later delivery: consent changes or a move to another city.
    if not tl.is_delta and tl.n_windows > 1:
        w = tl.window_of(c.updated)
        cand = np.flatnonzero((w < tl.n_windows - 1) & (rng.random(m) < 0.08))
        upd = c.take(cand)
        start = tl.window_start(w[cand] + 1)
        upd.updated = start + (rng.random(len(cand)) * (tl.t1 - start)).astype(np.int64)
        upd.is_update[:] = True
        change_consent = rng.random(len(cand)) < 0.6
        upd.consent = np.where(change_consent,
                               np.where(upd.consent == 1, 2, 1), upd.consent).astype(np.int8)
        upd.city = np.where(change_consent, upd.city, upd.city + 1 + rng.integers(0, 3, len(cand)))
        upd.ts_style = rng.choice(3, len(cand), p=[0.5, 0.3, 0.2]).astype(np.int8)
        c = c.concat(upd)
    return Population(
        pid=pids, persona=persona, in_crm=in_crm, country=country, first=first, last=last,
        birth_day=birth_day, domain=domain, email_style=email_style, first_seen=first_seen,
        phone_nsn=phone, city=city, consent=consent, n_devices=n_dev,
        dev_person=dev_person, dev_key=dev_key, dev_type=dev_type, dev_ua=dev_ua, dev_ip=dev_ip,
        c_person=c.person, c_key=c.key, c_k=c.k, c_is_update=c.is_update, c_created=c.created,
        c_updated=c.updated, c_email_variant=c.email_variant, c_placeholder=c.placeholder,
        c_phone_fmt=c.phone_fmt, c_phone_nsn=c.phone_nsn, c_country=c.country, c_city=c.city,
        c_last=c.last, c_birth_missing=c.birth_missing, c_name_upper=c.name_upper,
        c_consent=c.consent, c_gender_fmt=c.gender_fmt, c_ts_style=c.ts_style, c_tz=c.tz,
        household_of=household_of,
    )


@dataclass
class _Contacts:
    person: np.ndarray
    key: np.ndarray
    k: np.ndarray
    is_update: np.ndarray
    created: np.ndarray
    updated: np.ndarray
    email_variant: np.ndarray
    placeholder: np.ndarray
    phone_fmt: np.ndarray
    phone_nsn: np.ndarray
    country: np.ndarray
    city: np.ndarray
    last: np.ndarray
    birth_missing: np.ndarray
    name_upper: np.ndarray
    consent: np.ndarray
    gender_fmt: np.ndarray
    ts_style: np.ndarray
    tz: np.ndarray

    def take(self, idx: np.ndarray) -> _Contacts:
        return _Contacts(**{k: v[idx].copy() for k, v in vars(self).items()})

    def concat(self, other: _Contacts) -> _Contacts:
        return _Contacts(**{k: np.concatenate([v, getattr(other, k)])
                            for k, v in vars(self).items()})


def contacts_view(pop: Population, idx: np.ndarray) -> dict[str, np.ndarray]:
    """Selected contact records as a plain dict (for delta updates and rendering)."""
    return {k[2:]: getattr(pop, k)[idx] for k in vars(pop) if k.startswith("c_")}
