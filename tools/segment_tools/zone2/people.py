"""Persons: persona, latent purchase rate, true identity, households, twins, father/son."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

import numpy as np

from segment_tools.zone2 import names as nm
from segment_tools.zone2.config import PERSONAS, ZoneConfig


@dataclass(slots=True)
class Person:
    person_id: str
    persona: str
    country: str
    gender: str
    first_name: str
    last_name: str
    birth_date: date
    email: str
    phone_e164: str
    city: str
    postal_code: str
    street: str
    first_seen: date
    last_active: date
    rate_per_day: float  # latent completed-order rate while active
    future_rate_per_day: float
    aov_local: float
    discount_prob: float
    discount_depth: float
    device_mix: tuple[float, float, float, float]
    weekend_share: float
    sessions_per_day: float
    events_per_session: float
    has_crm: bool
    email_habit: str  # exact | case_space | plus_tag | gmail_dots (at guest checkouts)
    consent: str  # 'true' | 'false' | '' (unknown): the latest value the CRM holds
    household_id: str = ""
    twin_of: str = ""
    relation: str = ""  # 'father_of:P..' | 'son_of:P..'
    contact_ids: list[str] = field(default_factory=list)
    emails: list[str] = field(default_factory=list)  # every real email of the person
    devices: list[str] = field(default_factory=list)


def _phone(rng: np.random.Generator, country: str, area: str, mobile: bool) -> str:
    """A syntactically valid E.164 number in the country's numbering plan."""
    if country == "US":
        # 555-01xx is the fictional range; keep the area code of the city
        return f"+1{area}555{rng.integers(100, 10000):04d}"
    if country == "GB":
        if mobile:
            return f"+447{rng.integers(100, 1000)}{rng.integers(0, 1000000):06d}"
        rest = 10 - len(area)
        return f"+44{area}{rng.integers(10 ** (rest - 1), 10**rest)}"
    if country == "DE":
        if mobile:
            return f"+491{rng.choice([51, 52, 60, 70, 76])}{rng.integers(0, 10**8):08d}"
        return f"+49{area}{rng.integers(10**6, 10**7)}"
    # FR: 9 national digits after the trunk 0
    if mobile:
        return f"+33{rng.choice([6, 7])}{rng.integers(0, 10**8):08d}"
    return f"+33{area}{rng.integers(0, 10**8):08d}"


def _postal(rng: np.random.Generator, country: str, prefix: str) -> str:
    if country == "US":
        return f"{prefix}{rng.integers(0, 100):02d}"
    if country == "GB":
        letters = "ABDEFGHJLNPQRSTUWXYZ"
        a, b = letters[rng.integers(20)], letters[rng.integers(20)]
        return f"{prefix} {rng.integers(1, 10)}{a}{b}"
    if country == "DE":
        return f"{prefix}{rng.integers(0, 1000):03d}"
    return f"{prefix}{rng.integers(0, 1000):03d}"


class EmailBook:
    """Hands out real-looking emails, unique across strangers."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.taken: set[str] = set()

    def new(self, first: str, last: str, country: str) -> str:
        rng = self.rng
        local = nm.email_local(first, last)
        f, _, s = local.partition(".")
        style = rng.integers(0, 6)
        if style == 1:
            local = f"{f[:1]}{s}"
        elif style == 2:
            local = f"{f}_{s}"
        elif style == 3:
            local = f"{f}{s}{rng.integers(1, 100)}"
        elif style == 4:
            local = f"{s}.{f}{rng.integers(60, 100)}"
        domains = nm.DOMAINS[country]
        domain = domains[rng.integers(len(domains))]
        email = f"{local}@{domain}"
        while email in self.taken:
            email = f"{local}{rng.integers(1, 10000)}@{domain}"
        self.taken.add(email)
        return email


def _pick(rng: np.random.Generator, items: list[str]) -> str:
    return items[int(rng.integers(len(items)))]


def make_persons(cfg: ZoneConfig, rng: np.random.Generator) -> tuple[list[Person], EmailBook]:
    n = cfg.persons
    shares = np.array([p.share for p in PERSONAS])
    persona_idx = rng.choice(len(PERSONAS), size=n, p=shares / shares.sum())
    country_idx = rng.choice(len(nm.COUNTRIES), size=n, p=nm.COUNTRY_WEIGHTS)
    female = rng.random(n) < 0.52
    # individual spread around the persona means (log-normal keeps rates positive)
    rate_mult = rng.lognormal(0.0, 0.45, n)
    aov_mult = rng.lognormal(0.0, 0.30, n)
    age_days = rng.integers(18 * 365, 80 * 365, n)
    has_crm = rng.random(n) < cfg.crm_share
    consent_draw = rng.random(n)
    habit_names = list(cfg.guest_email_habits)
    hw = np.array([cfg.guest_email_habits[h] for h in habit_names])
    habits = rng.choice(len(habit_names), size=n, p=hw / hw.sum())
    book = EmailBook(rng)
    persons: list[Person] = []
    for i in range(n):
        pa = PERSONAS[int(persona_idx[i])]
        country = nm.COUNTRIES[int(country_idx[i])]
        gender = "f" if female[i] else "m"
        first = _pick(rng, nm.FIRST_F[country] if female[i] else nm.FIRST_M[country])
        last = _pick(rng, nm.SURNAMES[country])
        city, prefix, area = nm.CITIES[country][int(rng.integers(len(nm.CITIES[country])))]
        tenure = int(rng.integers(pa.tenure_days[0], pa.tenure_days[1] + 1))
        lapse = int(rng.integers(pa.lapse_days[0], pa.lapse_days[1] + 1))
        lapse = min(lapse, tenure - 1) if tenure > 1 else 0
        rate = pa.orders_per_year / 365.0 * float(rate_mult[i])
        # the future keeps the rate of those still active; lapsed people rarely come back
        future_rate = rate if lapse <= 45 else rate * 0.04
        # stationary: a quiet spell is no planted end of history for the active
        quiet = 0 if cfg.lapse == "stationary" and lapse <= 45 else lapse
        street_no = int(rng.integers(1, 300))
        street = _pick(rng, nm.STREETS[country])
        street = f"{street_no} {street}" if country in ("US", "GB") else f"{street} {street_no}"
        consent = "true" if consent_draw[i] < 0.62 else ("false" if consent_draw[i] < 0.9 else "")
        persons.append(Person(
            person_id=f"P{i + 1:06d}", persona=pa.name, country=country, gender=gender,
            first_name=first, last_name=last,
            birth_date=cfg.as_of - timedelta(days=int(age_days[i])),
            email=book.new(first, last, country),
            phone_e164=_phone(rng, country, area, mobile=bool(rng.random() < 0.7)),
            city=city, postal_code=_postal(rng, country, prefix), street=street,
            first_seen=cfg.as_of - timedelta(days=tenure),
            last_active=cfg.as_of - timedelta(days=quiet),
            rate_per_day=rate, future_rate_per_day=future_rate,
            aov_local=pa.aov_usd * float(aov_mult[i]) * nm.FX_PER_USD[nm.CURRENCY[country]],
            discount_prob=pa.discount_prob, discount_depth=pa.discount_depth,
            device_mix=pa.device_mix, weekend_share=pa.weekend_share,
            sessions_per_day=pa.sessions_per_month / 30.0,
            events_per_session=pa.events_per_session,
            has_crm=bool(has_crm[i]), email_habit=habit_names[int(habits[i])], consent=consent,
        ))
        persons[-1].emails.append(persons[-1].email)
    _plant_families(cfg, rng, persons, book)
    return persons, book


def _plant_families(
    cfg: ZoneConfig, rng: np.random.Generator, persons: list[Person], book: EmailBook
) -> None:
    """Households share surname, address and a landline; twins also share a birth date;
    a father and son share first and last name and phone but not the birth date."""
    n = len(persons)
    order = rng.permutation(n)
    cursor = 0
    hh_no = 0

    def take(k: int) -> list[Person]:
        nonlocal cursor
        chosen = [persons[int(j)] for j in order[cursor:cursor + k]]
        cursor += k
        return chosen

    def join(head: Person, member: Person) -> None:
        member.country = head.country
        member.last_name = head.last_name
        member.city, member.postal_code, member.street = head.city, head.postal_code, head.street
        member.phone_e164 = head.phone_e164
        member.household_id = head.household_id
        # everyone keeps a personal email; a new one matching the new surname
        book.taken.discard(member.email)
        member.emails.remove(member.email)
        member.email = book.new(member.first_name, member.last_name, member.country)
        member.emails.append(member.email)
        # a household buys in the household's currency
        member.aov_local = member.aov_local / nm.FX_PER_USD[nm.CURRENCY[member.country]] * (
            nm.FX_PER_USD[nm.CURRENCY[head.country]])

    def distinct_first(member: Person, taken: set[str]) -> None:
        pool = nm.FIRST_F[member.country] if member.gender == "f" else nm.FIRST_M[member.country]
        while member.first_name in taken:
            member.first_name = _pick(rng, pool)

    n_twins = round(n * cfg.twin_pairs_per_1000 / 1000)
    n_fs = round(n * cfg.father_son_per_1000 / 1000)
    for _ in range(n_twins):
        if cursor + 2 > n:
            break
        a, b = take(2)
        hh_no += 1
        a.household_id = f"H{hh_no:05d}"
        join(a, b)
        distinct_first(b, {a.first_name})
        b.birth_date = a.birth_date
        a.twin_of, b.twin_of = b.person_id, a.person_id
    for _ in range(n_fs):
        if cursor + 2 > n:
            break
        father, son = take(2)
        hh_no += 1
        father.household_id = f"H{hh_no:05d}"
        father.gender = son.gender = "m"
        father.first_name = _pick(rng, nm.FIRST_M[father.country])
        son.first_name = father.first_name
        join(father, son)
        son.first_name = father.first_name
        years = int(rng.integers(24, 38))
        son_age = int(rng.integers(18, 40))
        son.birth_date = cfg.as_of - timedelta(days=365 * son_age + int(rng.integers(0, 365)))
        father.birth_date = son.birth_date - timedelta(days=365 * years + int(rng.integers(0, 300)))
        father.relation, son.relation = f"father_of:{son.person_id}", f"son_of:{father.person_id}"
    target = int(n * cfg.household_share)
    in_households = 0
    while in_households < target and cursor + 2 <= n:
        size = int(rng.choice([2, 3, 4], p=[0.55, 0.3, 0.15]))
        size = min(size, n - cursor)
        members = take(size)
        hh_no += 1
        head = members[0]
        head.household_id = f"H{hh_no:05d}"
        firsts = {head.first_name}
        for m in members[1:]:
            join(head, m)
            distinct_first(m, firsts)
            firsts.add(m.first_name)
        in_households += size
    # persons picked for a family after their email was built keep a matching email
    for p in persons:
        if p.household_id and nm.email_local(p.first_name, "").strip(".") not in p.email:
            book.taken.discard(p.email)
            p.emails.remove(p.email)
            p.email = book.new(p.first_name, p.last_name, p.country)
            p.emails.append(p.email)
