"""Source specs as data: what each landing source holds and which rules its rows obey.

Everything source-specific lives here; the readers and checks only interpret these fields
(no ``if spec.name == ...`` elsewhere).
"""

from __future__ import annotations

from dataclasses import dataclass

LINEAGE_COLUMNS: tuple[str, ...] = ("_source_file", "_line_number", "_loaded_at", "_batch_id")
ORDER_STATUSES: tuple[str, ...] = ("completed", "refunded", "cancelled", "pending")
EVENT_TYPES: tuple[str, ...] = ("identify", "page", "track")


@dataclass(frozen=True)
class SourceSpec:
    """How one landing source maps to its raw table, and the contract checks of its rows."""

    name: str
    table: str
    kind: str  # "csv" | "jsonl"
    columns: tuple[str, ...]
    required: tuple[str, ...]
    # Timestamps that must parse (and lie within the timestamp bound) when present.
    timestamps: tuple[str, ...] = ()
    # Timestamps loaded as landed even when unparseable (staging casts them): an erasure
    # request must be executed whatever its requested_at says.
    soft_timestamps: tuple[str, ...] = ()
    # Decimals >= 0 and below the amount bound.
    amounts: tuple[str, ...] = ()
    # column -> the values it may take (matched after lower(trim())).
    enumerations: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # Column checked against the reporting currencies of the fx_rates seed.
    currency_column: str | None = None
    # Optional integers >= 1.
    positive_integers: tuple[str, ...] = ()
    # At least one of these must be present.
    one_of_required: tuple[str, ...] = ()
    # Raw column -> SQL expression replacing it on insert (``{rel}`` is the quoted file path).
    generated: tuple[tuple[str, str], ...] = ()
    # Identifier kind -> column: rows of an erased person are quarantined without content.
    identifiers: tuple[tuple[str, str], ...] = ()
    # A quarantined row's raw_record is not kept (it holds what the row asks to forget).
    redact_quarantine: bool = False

    @property
    def suffixes(self) -> tuple[str, ...]:
        return (f".{self.kind}", f".{self.kind}.gz")


SPECS: dict[str, SourceSpec] = {
    "crm": SourceSpec(
        name="crm",
        table="raw.crm_contacts",
        kind="csv",
        columns=(
            "contact_id",
            "email",
            "phone",
            "first_name",
            "last_name",
            "birth_date",
            "gender",
            "country",
            "city",
            "postal_code",
            "marketing_consent",
            "created_at",
            "updated_at",
        ),
        required=("contact_id", "updated_at"),
        timestamps=("created_at", "updated_at"),
        identifiers=(("contact_id", "contact_id"), ("email", "email"), ("phone", "phone")),
    ),
    "analytics": SourceSpec(
        name="analytics",
        table="raw.analytics_events",
        kind="jsonl",
        columns=(
            "message_id",
            "type",
            "event",
            "anonymous_id",
            "user_id",
            "timestamp",
            "context",
            "properties",
            "traits",
        ),
        required=("messageId", "type", "timestamp"),
        timestamps=("timestamp",),
    ),
    "transactions": SourceSpec(
        name="transactions",
        table="raw.transactions_orders",
        kind="csv",
        columns=(
            "order_id",
            "contact_id",
            "email",
            "order_ts",
            "status",
            "currency",
            "total_amount",
            "discount_amount",
            "items_count",
            "channel",
            "updated_at",
        ),
        required=("order_id", "order_ts", "status", "currency", "total_amount"),
        timestamps=("order_ts", "updated_at"),
        amounts=("total_amount", "discount_amount"),
        enumerations=(("status", ORDER_STATUSES),),
        currency_column="currency",
        positive_integers=("items_count",),
        identifiers=(("order_id", "order_id"), ("contact_id", "contact_id"), ("email", "email")),
    ),
    "erasure": SourceSpec(
        name="erasure",
        table="raw.erasure_requests",
        kind="csv",
        columns=("request_id", "contact_id", "email", "requested_at"),
        required=(),
        soft_timestamps=("requested_at",),
        one_of_required=("contact_id", "email"),
        # A request without an id is still executed: it gets one from its file and line.
        generated=(
            (
                "request_id",
                "coalesce(nullif(trim(request_id), ''), {rel} || '#L' || _line_number)",
            ),
        ),
        redact_quarantine=True,
    ),
}

# JSON field -> raw column -> the type from_json extracts.
ANALYTICS_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("messageId", "message_id", "VARCHAR"),
    ("type", "type", "VARCHAR"),
    ("event", "event", "VARCHAR"),
    ("anonymousId", "anonymous_id", "VARCHAR"),
    ("userId", "user_id", "VARCHAR"),
    ("timestamp", "timestamp", "VARCHAR"),
    ("context", "context", "JSON"),
    ("properties", "properties", "JSON"),
    ("traits", "traits", "JSON"),
)
# Identifier fields: a JSON string is taken as is, a number becomes its text (from_json's
# VARCHAR), a boolean, array or object is a contract violation.
ANALYTICS_ID_FIELDS: tuple[str, ...] = ("messageId", "anonymousId", "userId")
# Nested fields that must be JSON objects when present.
ANALYTICS_OBJECT_FIELDS: tuple[str, ...] = ("context", "properties", "traits")
# Identifier kind -> SQL over the parsed struct ``_j`` (suppression of erased people).
ANALYTICS_IDENTIFIERS: tuple[tuple[str, str], ...] = (
    ("anonymous_id", '_j."anonymousId"'),
    ("contact_id", '_j."userId"'),
    ("email", "json_extract_string(_j.\"traits\", '$.email')"),
    ("phone", "json_extract_string(_j.\"traits\", '$.phone')"),
)
