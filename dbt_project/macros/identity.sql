{#-
    Normalisation shared by identity resolution (staging emails, the
    identifier graph and the probabilistic matcher's input).
    plugins/segment_warehouse/identity/features.py holds the same rules for
    the matcher's Python entry points; tests/test_identity_normalisation.py
    checks that the two agree.
-#}

{#- Every character of `expr` that is not a letter removed. Under dbt: the
    portable regexp_replace_all (portable.sql; on Spark a DuckDB-style 'g'
    flag would null the result). Without dbt (plain Jinja, as
    tests/test_identity_normalisation.py renders this file to run the rules
    on DuckDB) there is no adapter to dispatch on: the DuckDB form, which is
    exactly regexp_replace_all's DuckDB body. -#}
{% macro _letters_only(expr) -%}
    {%- if adapter is defined -%}
        {{ regexp_replace_all(expr, "'[^\p{L}]'", "''") }}
    {%- else -%}
        regexp_replace({{ expr }}, '[^\p{L}]', '', 'g')
    {%- endif -%}
{%- endmacro %}

{#- Name text -> comparison key: lower case, letters of any script only,
    accents stripped, letters strip_accents leaves alone spelled out, and the
    German umlaut transliterations (ue/oe/ae) collapsed so that Müller, Muller
    and Mueller, Jürgen and Juergen, José and Jose share one key. Null when no
    letter is left. Only used to compare, never shown. On Spark,
    strip_accents is a function the runner registers (segment_warehouse.spark.
    functions, DuckDB's rule) and the 'g' replace dispatches (portable.sql). -#}
{% macro fold_name(column) -%}
    nullif(
        replace(replace(replace(
            {{ _letters_only(
                "strip_accents(
                    replace(replace(replace(replace(replace(replace(replace(
                        lower(" ~ column ~ "),
                        'ß', 'ss'), 'ø', 'o'), 'ł', 'l'), 'æ', 'ae'), 'œ', 'oe'), 'đ', 'd'), 'þ', 'th')
                )"
            ) }},
        'ue', 'u'), 'oe', 'o'), 'ae', 'a'),
        ''
    )
{%- endmacro %}

{#- A trimmed, lower-case email -> the mailbox it delivers to. A +tag is
    dropped on every domain: "+" is the subaddress separator (RFC 5233) of
    Gmail, Outlook, iCloud, Proton, Fastmail and the common mail servers, and
    shops receive tagged checkout emails from every provider; two people
    holding local and local+tag of one domain is not a case worth a split.
    Dots are only dropped for Gmail, which documents that it ignores them
    (elsewhere a dot can separate two mailboxes), and googlemail.com is
    gmail.com. -#}
{% macro email_mailbox(email) -%}
    case
        when regexp_full_match({{ email }}, '[^@+]+(\+[^@]*)?@(gmail|googlemail)\.com')
            then replace(split_part(split_part({{ email }}, '@', 1), '+', 1), '.', '') || '@gmail.com'
        when regexp_full_match({{ email }}, '[^@+]+\+[^@]*@[^@]+')
            then split_part(split_part({{ email }}, '@', 1), '+', 1) || '@' || split_part({{ email }}, '@', 2)
        else {{ email }}
    end
{%- endmacro %}

{#- Raw email text -> trimmed, lower-case mailbox (null if empty). -#}
{% macro clean_email(column) -%}
    {{ email_mailbox(clean_lower(column)) }}
{%- endmacro %}

{#- Two known birth dates that cannot be one person's: not equal, not the
    same date with day and month swapped, and more than one typed character
    (or one swap of neighbours) apart. `l` / `r` are relation aliases with
    birth_date (date) columns. On Spark, damerau_levenshtein (the Splink
    similarity jar's) and strftime (%Y %m %d) are functions the runner
    registers under DuckDB's names (segment_warehouse.spark.session). -#}
{% macro birth_dates_conflict(l, r) -%}
    coalesce(
        {{ l }}.birth_date <> {{ r }}.birth_date
        and not (
            year({{ l }}.birth_date) = year({{ r }}.birth_date)
            and day({{ l }}.birth_date) = month({{ r }}.birth_date)
            and month({{ l }}.birth_date) = day({{ r }}.birth_date)
        )
        and damerau_levenshtein(
            strftime({{ l }}.birth_date, '%Y%m%d'), strftime({{ r }}.birth_date, '%Y%m%d')
        ) > 1,
        false
    )
{%- endmacro %}

{#- True when an email local part is spelled from the person's own names
    (alexander.green, agreen, alexanderg, green.alexander85, zoe.hoffmann for
    Zoë Hoffmann): two such addresses agreeing say nothing the name
    comparison has not said already. Letters only, folded like fold_name. -#}
{% macro email_local_is_name(email_local, first_name_key, last_name_key) -%}
    (
        {{ email_local }} is not null
        and {{ first_name_key }} is not null
        and {{ last_name_key }} is not null
        and replace(replace(coalesce({{ fold_name(email_local) }}, ''), {{ last_name_key }}, ''), {{ first_name_key }}, '')
            in ('', left({{ first_name_key }}, 1), left({{ last_name_key }}, 1))
    )
{%- endmacro %}
