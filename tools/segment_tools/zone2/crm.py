"""CRM records: one or more per person, with the mess re-registrations leave."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import numpy as np

from segment_tools.zone2 import names as nm
from segment_tools.zone2 import render
from segment_tools.zone2.config import ZoneConfig
from segment_tools.zone2.people import EmailBook, Person, _phone, _postal


@dataclass(slots=True)
class CrmRecord:
    contact_id: str
    person_id: str
    is_primary: bool
    dup_kind: list[str]
    email: str  # as written (may be a case/space variant or a placeholder)
    email_true: str  # the real address behind it ('' when none or a placeholder)
    phone: str  # as written
    phone_e164: str  # '' when missing or a placeholder
    first_name: str
    last_name: str
    birth_date: str
    gender: str
    country: str
    city: str
    postal_code: str
    street: str
    consent: str
    created_at: datetime
    updated_at: datetime
    placeholder_email: str = ""
    placeholder_phone: str = ""
    # later versions of this record: (updated_at, changed fields)
    updates: list[tuple[datetime, dict[str, str]]] = field(default_factory=list)


def _contact_id(rng: np.random.Generator) -> str:
    return "crm_" + "".join(f"{b:02x}" for b in rng.integers(0, 256, size=5))


def _typo(rng: np.random.Generator, text: str) -> str:
    if len(text) < 3:
        return text + text[-1:]
    i = int(rng.integers(1, len(text) - 1))
    k = int(rng.integers(0, 3))
    if k == 0:  # transpose two letters
        return text[:i] + text[i + 1] + text[i] + text[i + 2:]
    if k == 1:  # drop a letter
        return text[:i] + text[i + 1:]
    return text[:i] + text[i] + text[i:]  # double a letter


def _accent_variant(rng: np.random.Generator, text: str) -> str:
    if any(c in text for c in "äöüÄÖÜß") and rng.random() < 0.6:
        return nm.transliterate_de(text)
    return nm.fold_accents(text)


def _ts(d: date, rng: np.random.Generator) -> datetime:
    return datetime(d.year, d.month, d.day, tzinfo=UTC) + timedelta(
        seconds=int(rng.integers(6 * 3600, 23 * 3600)))


def make_crm(cfg: ZoneConfig, rng: np.random.Generator, persons: list[Person],
             book: EmailBook) -> list[CrmRecord]:
    kinds = list(cfg.dup_contact_weights)
    kw = np.array([cfg.dup_contact_weights[k] for k in kinds])
    kw = kw / kw.sum()
    as_of_dt = datetime(cfg.as_of.year, cfg.as_of.month, cfg.as_of.day, tzinfo=UTC)
    records: list[CrmRecord] = []
    used_ids: set[str] = set()

    def new_id() -> str:
        cid = _contact_id(rng)
        while cid in used_ids:
            cid = _contact_id(rng)
        used_ids.add(cid)
        return cid

    for p in persons:
        if not p.has_crm:
            continue
        created = _ts(p.first_seen, rng)
        primary = CrmRecord(
            contact_id=new_id(), person_id=p.person_id, is_primary=True, dup_kind=[],
            email=p.email, email_true=p.email,
            phone=render.phone_variant(rng, p.phone_e164, p.country) if rng.random() < 0.85
            else "",
            phone_e164=p.phone_e164, first_name=p.first_name, last_name=p.last_name,
            birth_date=p.birth_date.isoformat() if rng.random() < 0.9 else "",
            gender=render.gender_text(rng, p.gender), country=p.country, city=p.city,
            postal_code=p.postal_code, street=p.street, consent=p.consent,
            created_at=created, updated_at=created + timedelta(minutes=int(rng.integers(0, 90))),
        )
        if not primary.phone:
            primary.phone_e164 = ""
        if rng.random() < 0.15:
            primary.email = render.case_space_variant(rng, p.email)
        recs = [primary]
        n_dups = 0
        if rng.random() < cfg.dup_share:
            n_dups = 2 if rng.random() < cfg.triple_share else 1
        for _ in range(n_dups):
            recs.append(_duplicate(cfg, rng, p, primary, kinds, kw, book, new_id, as_of_dt))
        for r in recs:
            if r.email_true and rng.random() < cfg.placeholder_email_share:
                # the clerk typed a placeholder instead of asking for the address
                r.email = nm.PLACEHOLDER_EMAILS[int(rng.integers(len(nm.PLACEHOLDER_EMAILS)))]
                r.placeholder_email, r.email_true = r.email.strip().lower(), ""
            if rng.random() < cfg.placeholder_phone_share:
                r.phone = nm.PLACEHOLDER_PHONES[int(rng.integers(len(nm.PLACEHOLDER_PHONES)))]
                r.placeholder_phone, r.phone_e164 = r.phone, ""
        records.extend(recs)
        p.contact_ids.extend(r.contact_id for r in recs)
        _plan_updates(cfg, rng, p, recs, as_of_dt)
    return records


def _duplicate(cfg: ZoneConfig, rng: np.random.Generator, p: Person, primary: CrmRecord,
               kinds: list[str], kw: np.ndarray, book: EmailBook, new_id, as_of_dt: datetime,
               ) -> CrmRecord:
    contact = kinds[int(rng.choice(len(kinds), p=kw))]
    dup_kind = [contact]
    first, last = p.first_name, p.last_name
    name_draw = rng.random()
    if name_draw < 0.22 and first in nm.NICKNAMES:
        opts = nm.NICKNAMES[first]
        first = opts[int(rng.integers(len(opts)))]
        dup_kind.append("nickname")
    elif name_draw < 0.37:
        if rng.random() < 0.5:
            last = _typo(rng, last)
        else:
            first = _typo(rng, first)
        dup_kind.append("typo")
    elif name_draw < 0.47:
        first, last = last, first
        dup_kind.append("transposed")
    elif name_draw < 0.65 and (nm.has_accent(first) or nm.has_accent(last)):
        first, last = _accent_variant(rng, first), _accent_variant(rng, last)
        dup_kind.append("accent")
    if rng.random() < 0.1:
        first, last = first.upper(), last.upper()
    birth = p.birth_date
    dob_draw = rng.random()
    birth_text = birth.isoformat()
    if dob_draw < 0.18 and birth.day <= 12 and birth.day != birth.month:
        birth_text = date(birth.year, birth.day, birth.month).isoformat()
        dup_kind.append("dm_swap")
    elif dob_draw < 0.30 and contact != "no_shared_contact":
        birth_text = ""
        dup_kind.append("missing_birth_date")
    city, postal, street = p.city, p.postal_code, p.street
    addr_draw = rng.random()
    if addr_draw < 0.22:
        city, prefix, _area = nm.CITIES[p.country][int(rng.integers(len(nm.CITIES[p.country])))]
        postal = _postal(rng, p.country, prefix)
        street = f"{int(rng.integers(1, 300))} {nm.STREETS[p.country][0]}"
        dup_kind.append("moved")
    elif addr_draw < 0.32:
        city = postal = street = ""
        dup_kind.append("missing_address")
    email_true, phone_e164 = p.email, p.phone_e164
    if contact in ("new_email_same_phone", "no_shared_contact"):
        email_true = book.new(p.first_name, p.last_name, p.country)
        p.emails.append(email_true)
    if contact in ("same_email_new_phone", "no_shared_contact"):
        phone_e164 = _phone(rng, p.country, nm.CITIES[p.country][0][2], mobile=True)
    if contact == "no_shared_contact" and rng.random() < 0.3:
        phone_e164 = ""  # no phone given at all
    email = email_true
    if contact == "same_email" and rng.random() < 0.5:
        email = render.case_space_variant(rng, email_true)
    if contact == "new_email_same_phone" and rng.random() < 0.2:
        email = email_true = ""
        dup_kind.append("missing_email")
    created = primary.created_at + timedelta(days=int(rng.integers(1, 400)))
    created = min(created, as_of_dt - timedelta(days=1))
    return CrmRecord(
        contact_id=new_id(), person_id=p.person_id, is_primary=False, dup_kind=dup_kind,
        email=email, email_true=email_true,
        phone=render.phone_variant(rng, phone_e164, p.country) if phone_e164 else "",
        phone_e164=phone_e164, first_name=first, last_name=last, birth_date=birth_text,
        gender=render.gender_text(rng, p.gender) if rng.random() < 0.7 else "",
        country=p.country if rng.random() < 0.9 else "", city=city, postal_code=postal,
        street=street, consent=p.consent, created_at=created,
        updated_at=created + timedelta(minutes=int(rng.integers(0, 90))),
    )


def _plan_updates(cfg: ZoneConfig, rng: np.random.Generator, p: Person, recs: list[CrmRecord],
                  as_of_dt: datetime) -> None:
    """Later deliveries change some records; the person's consent truth is the value of
    whichever record the CRM touched last (latest value wins)."""
    for r in recs:
        if rng.random() >= cfg.crm_update_share:
            continue
        span = (as_of_dt - r.updated_at).days
        if span < 2:
            continue
        ts = r.updated_at + timedelta(days=int(rng.integers(1, span)),
                                      seconds=int(rng.integers(0, 86400)))
        if rng.random() < 0.5:
            new = {"true": "false", "false": "true", "": "true"}[r.consent]
            r.updates.append((ts, {"consent": new}))
        else:
            city, prefix, _area = nm.CITIES[p.country][int(rng.integers(len(nm.CITIES[p.country])))]
            r.updates.append((ts, {"city": city, "postal_code": _postal(rng, p.country, prefix)}))
    latest: tuple[datetime, str] | None = None
    for r in recs:
        value, when = r.consent, r.updated_at
        for ts, change in r.updates:
            if "consent" in change:
                value, when = change["consent"], ts
            else:
                when = ts
        if latest is None or when > latest[0]:
            latest = (when, value)
    if latest is not None:
        p.consent = latest[1]
