"""Numpy rows -> CSV / JSON-lines text (Arrow string arrays, one element per line)."""

from __future__ import annotations

from functools import cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import vocab as V
from .activity import Events, Orders, Sessions
from .population import FIRST_ALL, FIRST_ASCII, LAST_ASCII, N_F, Population, email_number
from .text import (
    FixedWidth,
    by_code,
    choose,
    concat_with_fixed,
    dates,
    join,
    money,
    permute_decimal,
    scatter_take,
    scramble,
    take,
    timestamps,
    to_str,
    vocab_array,
    where,
)

CRM_HEADER = ("contact_id,email,phone,first_name,last_name,birth_date,gender,country,city,"
              "postal_code,marketing_consent,created_at,updated_at")
ORDERS_HEADER = ("order_id,contact_id,email,order_ts,status,currency,total_amount,"
                 "discount_amount,items_count,channel,updated_at")
CURRENCIES = (*(c[3] for c in V.COUNTRIES), "USD")  # last index = USD
_CITY_OFF = np.cumsum([0] + [len(V.CITIES[c[0]]) for c in V.COUNTRIES])[:-1]
_CITY_N = np.array([len(V.CITIES[c[0]]) for c in V.COUNTRIES])
_CITY_NAMES = tuple(city for c in V.COUNTRIES for city, _ in V.CITIES[c[0]])
_POSTALS = tuple(pc_ for c in V.COUNTRIES for _, pc_ in V.CITIES[c[0]])


def _prefixed_digits(prefix: str, values: np.ndarray, width: int) -> pa.Array:
    """``prefix`` + zero-padded decimal (utf8_lpad semantics: wider values stay whole)."""
    values = np.asarray(values, dtype=np.int64)
    if len(values) and int(values.max()) >= 10**width:
        return join(prefix, pc.utf8_lpad(to_str(values), width, "0"))
    return FixedWidth().lit(prefix).digits(values, width).array(len(values))


def contact_ids(keys: np.ndarray) -> pa.Array:
    return _prefixed_digits("C", permute_decimal(keys, 10**9, 387_420_489, 12_345), 9)


def order_ids(keys: np.ndarray) -> pa.Array:
    return _prefixed_digits("ORD-", permute_decimal(keys, 10**10, 1_234_567_891, 98_765), 10)


def person_ids(pids: np.ndarray) -> pa.Array:
    return _prefixed_digits("P", pids, 8)


def anonymous_ids(device_keys: np.ndarray, seed: int) -> pa.Array:
    """UUID-shaped, unique (the first half is a bijection of the device key)."""
    return FixedWidth().uuid(*_anon_hashes(device_keys, seed)).array(len(device_keys))


def _anon_hashes(device_keys: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    return scramble(device_keys, seed * 2 + 1), scramble(device_keys, seed * 2 + 7_777)


def emails(pop: Population, person: np.ndarray) -> pa.Array:
    """The person's real email address, lower case."""
    person = np.asarray(person)

    def build(style: int, rows: np.ndarray) -> pa.Array:
        p = person[rows]
        f = take(FIRST_ASCII, pop.first[p])
        la = take(LAST_ASCII, pop.last[p])
        num = to_str(email_number(pop.pid[p]))
        at = ("@", take(V.EMAIL_DOMAINS, pop.domain[p]))
        if style == 0:
            return join(f, ".", la, num, *at)
        if style == 1:
            return join(pc.utf8_slice_codeunits(f, 0, 1), la, num, *at)
        return join(la, "_", f, num, *at)

    return by_code(pop.email_style[person], build)


def email_variants(base: pa.Array, variant: np.ndarray,
                   placeholder: np.ndarray | None = None) -> pa.Array:
    """0 as is, 1 upper case, 2 surrounding spaces, 3/-1 missing, 4 placeholder."""
    v = np.asarray(variant)

    def build(code: int, rows: np.ndarray) -> pa.Array:
        if code == 3:
            return pa.array([""], pa.string())
        b = base.take(pa.array(rows))
        return b if code == 0 else pc.utf8_upper(b) if code == 1 else join("  ", b, " ")

    out = by_code(np.where(v < 0, 3, np.minimum(v, 3)), build)
    if placeholder is not None and (v == 4).any():
        out = where(v == 4, take(V.PLACEHOLDER_EMAILS, np.maximum(placeholder, 0)), out)
    return out


def phones(nsn: np.ndarray, country: np.ndarray, fmt: np.ndarray) -> pa.Array:
    """Free-format phone numbers; fmt -1 = missing, 0 = E.164, 1..5 local styles."""
    nsn, country, fmt = np.asarray(nsn), np.asarray(country), np.asarray(fmt)
    is_nanp = (country == 0) | (country == 4)
    code = np.where(fmt < 0, 12, np.where(is_nanp, 0, 6) + np.maximum(fmt, 0))

    def build(k: int, rows: np.ndarray) -> pa.Array:
        if k == 12:
            return pa.array([""], pa.string())
        cc = take([c[1] for c in V.COUNTRIES], country[rows])
        s = to_str(nsn[rows])
        if k in (0, 6):
            return join("+", cc, s)
        if k == 11:
            return join("0", s)
        if k < 6:  # NANP: (a) e-n4 and friends
            a, e, n4 = (pc.utf8_slice_codeunits(s, i, i + w) for i, w in ((0, 3), (3, 3), (6, 4)))
            pre, s1, s2 = {1: ("(", ") ", "-"), 2: ("", "-", "-"), 3: ("", ".", "."),
                           4: ("1 ", " ", " "), 5: ("+1 ", " ", " ")}[k]
            return join(pre, a, s1, e, s2, n4)
        g1 = pc.utf8_slice_codeunits(s, 0, -8)
        g2 = pc.utf8_slice_codeunits(s, -8, -4)
        g3 = pc.utf8_slice_codeunits(s, -4, 2**31 - 1)
        if k == 7:
            return join("+", cc, " ", g1, " ", g2, " ", g3)
        if k == 8:
            return join("0", g1, " ", g2, " ", g3)
        if k == 9:
            return join("00", cc, " ", g1, " ", g2, " ", g3)
        return join("00", cc, " ", g1, ".", g2, ".", g3)

    return by_code(code, build)


def _consent_text(code: np.ndarray, rnd: np.ndarray) -> pa.Array:
    t = take(V.CONSENT_TRUE, rnd % len(V.CONSENT_TRUE))
    f = take(V.CONSENT_FALSE, rnd % len(V.CONSENT_FALSE))
    return choose(code, pa.array([""] * len(code)), t, f)


def crm_lines(pop: Population, rows: np.ndarray, extra_notes: bool) -> pa.Array:
    c = {k: getattr(pop, k)[rows] for k in vars(pop) if k.startswith("c_")}
    person = c["c_person"]
    base = emails(pop, person)
    email = email_variants(base, c["c_email_variant"], c["c_placeholder"])
    phone = phones(c["c_phone_nsn"], c["c_country"], c["c_phone_fmt"])
    first = take(FIRST_ALL, pop.first[person])
    last = take(V.LAST_NAMES, c["c_last"])
    up = c["c_name_upper"]
    first = where(up, pc.utf8_upper(first), first)
    last = where(up, pc.utf8_upper(last), last)
    bd = pop.birth_day[person]
    birth = where(c["c_birth_missing"], "", dates(bd))
    gf = c["c_gender_fmt"].astype(np.int64)
    female = pop.first[person] < N_F
    gender = where(female, take(V.GENDER_F, gf % 5), take(V.GENDER_M, gf % 5))
    gender = where(gf >= 10, "", gender)
    ctry = c["c_country"]
    country = take([x[0] for x in V.COUNTRIES], ctry)
    city_i = _CITY_OFF[ctry] + c["c_city"] % _CITY_N[ctry]
    consent = _consent_text(c["c_consent"].astype(np.int64), (c["c_key"] * 7 + gf).astype(np.int64))
    tz = np.array(V.TZ_OFFSETS_MIN)[c["c_tz"]]
    created = timestamps(c["c_created"], c["c_ts_style"], tz)
    updated = timestamps(c["c_updated"], c["c_ts_style"], tz)
    fields = [contact_ids(c["c_key"]), email, phone, first, last, birth, gender, country,
              take(_CITY_NAMES, city_i), take(_POSTALS, city_i), consent, created, updated]
    if extra_notes:
        # An unexpected column with RFC 4180 quoting (commas and doubled quotes).
        notes = where(c["c_key"] % 5 == 0, '"called, left message ""VIP"""', "")
        fields.append(notes)
    return join(join(*fields, sep=","), "\n")


def order_lines(pop: Population, o: Orders) -> pa.Array:
    email = email_variants(emails(pop, o.person), o.email_variant)
    contact = where(o.contact_key >= 0, contact_ids(np.maximum(o.contact_key, 0)), "")
    disc = money(o.discount_cents)
    disc = where((o.discount_cents == 0) & (o.key % 3 == 0), "", disc)
    fields = [order_ids(o.key), contact, email, timestamps(o.ts, o.ts_style),
              take(V.ORDER_STATUSES, o.status), take(CURRENCIES, o.currency),
              money(o.total_cents), disc, to_str(o.items), take(V.CHANNELS, o.channel),
              timestamps(o.updated, 0)]
    return join(join(*fields, sep=","), "\n")


@cache
def _prices() -> np.ndarray:
    # The catalogue is the same for every seed: prices are a property of products.
    return np.random.default_rng(12345).integers(499, 25_000, V.N_PRODUCTS)


# --- analytics events ----------------------------------------------------------------
#
# An event line is five pieces, all cut from one per-chunk "pool" of strings with a
# single Arrow ``take`` per file (the pieces of line i are elements 5i..5i+4, so the
# result's data buffer already is the file body):
#
#   head     {"messageId":"ajs-<hex>","timestamp":"<iso>",       per line, fixed width
#   kind     "type":"track","event":"Product Viewed","properties":{...},   vocabulary,
#            or per event for checkout/order (order properties) and identify (traits)
#   session  "anonymousId":"<uuid>","userId":"C..."|null,"context":{"ip":"<ip>",
#   device   "device":{"type":".."},"userAgent":"..",["campaign":{..},]"page":{
#            "referrer":..,"url":"<site>     vocabulary (device x agent x campaign x ref)
#   page     <path>"}}}\n                   vocabulary
#
# Campaign and external referrer only sit on a session's landing event.

_PATHS = ("/", "/c/", "/p/", "/search?q=sku", "/cart", "/checkout", "/account/login")
_N_CAT = 40
_CAMPAIGN_PIECES = ("", *(f'"campaign":{{"source":"{a}","medium":"{b}","name":"{c}"}},'
                          for a, b, c in V.CAMPAIGNS[1:]))
# Referrer: the session's first event carries the external referrer, later ones the site.
_REF_PIECES = (*(f'"{r}"' if i >= 2 else "null" for i, r in enumerate(V.REFERRERS)),
               f'"{V.SITE}/"')
_UA_VOCAB = (*(ua for uas in V.USER_AGENTS for ua in uas), *V.BOT_USER_AGENTS)
_UA_OFF = np.cumsum([0] + [len(x) for x in V.USER_AGENTS])


def _page_paths() -> list[str]:
    return ["/", *(f"/c/{i}" for i in range(_N_CAT)), *(f"/p/{i}" for i in range(V.N_PRODUCTS)),
            *(f"/search?q=sku{i}" for i in range(V.N_PRODUCTS)), *_PATHS[4:]]


# page code -> first page-vocabulary index, and whether the product picks within it
_PAGE_START = np.array([0, 1, 1 + _N_CAT, 1 + _N_CAT + V.N_PRODUCTS, 1 + _N_CAT + 2 * V.N_PRODUCTS,
                        2 + _N_CAT + 2 * V.N_PRODUCTS, 3 + _N_CAT + 2 * V.N_PRODUCTS])
_PAGE_BY_PRODUCT = np.array([0, 1, 1, 1, 0, 0, 0])


def _page_index(pcode: np.ndarray, product: np.ndarray) -> np.ndarray:
    """Page code (0 home, 1 category, 2 product, 3 search, 4 cart, 5 checkout, 6 login)."""
    pick = np.where(pcode == 1, product % _N_CAT, product) * _PAGE_BY_PRODUCT[pcode]
    return _PAGE_START[pcode] + pick


@cache
def _event_vocab() -> tuple[pa.Array, int, int]:
    """The static part of the pool: kind pieces, device pieces, page pieces.

    Returns (array, offset of the device pieces, offset of the page pieces).
    """
    price = _prices().tolist()
    kinds = [f'"type":"page","name":"{p}",' for p in V.PAGE_NAMES]
    for event in ("Product Viewed", "Product Added"):
        kinds += [f'"type":"track","event":"{event}","properties":{{"product_id":"p-{i}",'
                  f'"price":{c // 100}.{c % 100:02d}}},' for i, c in enumerate(price)]
    device = [f'"device":{{"type":"{t}"}},"userAgent":"{ua}",{camp}"page":{{"referrer":{ref},'
              f'"url":"{V.SITE}'
              for t in V.DEVICE_TYPES for ua in _UA_VOCAB for camp in _CAMPAIGN_PIECES
              for ref in _REF_PIECES]
    pages = [f'{path}"}}}}}}\n' for path in _page_paths()]
    arr = pa.array(kinds + device + pages, pa.string())
    return arr, len(kinds), len(kinds) + len(device)


def warm_event_vocab() -> None:
    _event_vocab()


def _octets() -> pa.Array:
    return vocab_array(tuple(str(i) for i in range(256)))


def _session_pieces(pop: Population, s: Sessions, seed: int,
                    order: np.ndarray | None = None) -> pa.Array:
    """``"anonymousId":..,"userId":..,"context":{"ip":"..",`` per session (in ``order``)."""
    if order is not None:
        s = Sessions(**{k: v[order] for k, v in vars(s).items()})
    ns = len(s.person)
    logged = s.user_contact >= 0
    anon = (FixedWidth().lit('"anonymousId":"').uuid(*_anon_hashes(s.device_key, seed))
            .lit('","userId":').array(ns))
    uid = (FixedWidth().lit('"C').digits(
        permute_decimal(np.maximum(s.user_contact[logged], 0), 10**9, 387_420_489, 12_345), 9)
        .lit('"').array(int(logged.sum())))
    uid_all = scatter_take(ns, [(np.flatnonzero(logged), uid)], pa.array(["null"], pa.string()))
    ip = s.dev_ip.astype(np.int64)
    octets = [_octets().take(pa.array(((ip >> k) & 255).astype(np.int32))) for k in (24, 16, 8, 0)]
    return join(anon, uid_all, ',"context":{"ip":"', join(*octets, sep="."), '",')


class EventRenderer:
    """Renders analytics lines from one pool of pieces, built once per chunk.

    ``rows`` are the events to render (event indices, in file order; an event
    delivered twice appears twice); :meth:`lines` renders ``rows[lo:hi]``.
    """

    def __init__(self, pop: Population, s: Sessions, e: Events, o: Orders, rows: np.ndarray,
                 id_base: int, seed: int) -> None:
        vocab, dev_off, page_off = _event_vocab()
        m = len(e.kind)
        kind, product, sess = e.kind, e.product, e.session
        first = e.pos == 0
        # kind piece: vocabulary for pages / product events, per event for the others
        kind_i = np.where(kind == V.EVENT_PAGE, e.page,
                          5 + (kind == V.EVENT_ADDED) * V.N_PRODUCTS + product).astype(np.int64)
        base = len(vocab)
        i_ord = np.flatnonzero((kind == V.EVENT_CHECKOUT) | (kind == V.EVENT_COMPLETED))
        orow = s.order[sess[i_ord]]
        done = kind[i_ord] == V.EVENT_COMPLETED
        ord_pieces = join(where(done, '"type":"track","event":"Order Completed","properties":'
                                      '{"order_id":"',
                                '"type":"track","event":"Checkout Started","properties":'
                                '{"order_id":"'),
                          order_ids(o.key[orow]), '",', where(done, '"revenue":', '"value":'),
                          money(o.total_cents[orow]), ',"currency":"',
                          take(CURRENCIES, o.currency[orow]), '"},')
        kind_i[i_ord] = base + np.arange(len(i_ord))
        base += len(i_ord)
        i_id = np.flatnonzero(kind == V.EVENT_IDENTIFY)
        person = s.person[sess[i_id]]
        has_phone = pop.pid[person] % 2 == 0
        phone = join(',"phone":"+', take([c[1] for c in V.COUNTRIES], pop.country[person]),
                     to_str(pop.phone_nsn[person]), '"')
        id_pieces = join('"type":"identify","traits":{"email":"', emails(pop, person), '"',
                         where(has_phone, phone, ""), "},")
        kind_i[i_id] = base + np.arange(len(i_id))
        base += len(i_id)
        # Session pieces in order of the sessions' first event: lines of a file are in
        # time order, so the pieces they need sit close together in memory.
        first_ev = np.cumsum(s.n_events) - s.n_events
        by_time = np.argsort(e.deliver_ts[first_ev], kind="stable")
        slot = np.empty(len(by_time), np.int64)
        slot[by_time] = np.arange(len(by_time))
        sessions = _session_pieces(pop, s, seed, by_time)
        self.head_base = base + len(sessions)
        # device piece: device type x user agent x campaign x referrer
        ua_i = np.where(s.is_bot, _UA_OFF[-1] + s.dev_ua,
                        _UA_OFF[np.minimum(s.dev_type, 2)] + s.dev_ua).astype(np.int64)
        dev_i = np.minimum(s.dev_type, 2).astype(np.int64) * len(_UA_VOCAB) + ua_i
        n_ref = len(_REF_PIECES)
        camp = np.where(first, s.campaign[sess], 0)
        ref = np.where(first, s.referrer[sess], n_ref - 1)
        dev_piece = dev_off + (dev_i[sess] * len(_CAMPAIGN_PIECES) + camp) * n_ref + ref
        is_page = kind == V.EVENT_PAGE
        pcode = np.where(is_page, e.page,
                         np.select([kind <= V.EVENT_ADDED, kind <= V.EVENT_COMPLETED], [2, 5], 6))
        self.idx = np.empty((m, 4), np.int32)  # kind, session, device, page per event
        self.idx[:, 0] = kind_i
        self.idx[:, 1] = base + slot[sess]
        self.idx[:, 2] = dev_piece
        self.idx[:, 3] = page_off + _page_index(pcode, product)
        self.rows = np.asarray(rows, dtype=np.int64)
        n = len(self.rows)
        head = (FixedWidth().lit('{"messageId":"ajs-')
                .hex16(scramble(self.rows.astype(np.uint64) + np.uint64(id_base), seed))
                .lit('","timestamp":"').iso_millis(e.ts[self.rows]).lit('",'))
        self.pool = concat_with_fixed([vocab, ord_pieces, id_pieces, sessions], head, n)

    def lines(self, lo: int, hi: int) -> pa.Array:
        """The lines (one string each, ``\\n`` included) of ``rows[lo:hi]``."""
        n = hi - lo
        idx = np.empty((n, 5), np.int32)
        idx[:, 0] = self.head_base + np.arange(lo, hi)
        idx[:, 1:] = self.idx[self.rows[lo:hi]]
        out = self.pool.take(pa.array(idx.ravel()))
        # every fifth offset (the take's output has offset 0: no int64 copy of them all)
        large = pa.types.is_large_string(out.type)
        offs = np.frombuffer(out.buffers()[1], np.int64 if large else np.int32)[:5 * n + 1:5]
        return pa.Array.from_buffers(out.type, n, [None, pa.py_buffer(offs.copy()),
                                                   out.buffers()[2]])
