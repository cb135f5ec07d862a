{#-
    SQL that differs between the two targets (issue #19), as adapter.dispatch
    macros: the `default__` body is what the DuckDB target always ran, the
    `spark__` body says the same thing in Spark SQL. Patterns and replacements
    are passed as SQL string literals (quotes included). Both targets read
    string literals raw (the Spark session sets
    spark.sql.parser.escapedStringLiterals, segment_warehouse.spark.session),
    so one regex literal means the same on both; RE2 (DuckDB) and Java (Spark)
    agree on the constructs used here.
-#}

{#- Every match of `pattern` in `expr` replaced. `replacement` may refer to
    groups as \1..\9 (DuckDB's syntax; Java's is $1). Spark's regexp_replace
    always replaces all matches; its fourth argument is a position, and a
    DuckDB-style 'g' there turns the whole result into null. -#}
{% macro regexp_replace_all(expr, pattern, replacement) -%}
    {{ return(adapter.dispatch('regexp_replace_all')(expr, pattern, replacement)) }}
{%- endmacro %}

{% macro default__regexp_replace_all(expr, pattern, replacement) -%}
    regexp_replace({{ expr }}, {{ pattern }}, {{ replacement }}, 'g')
{%- endmacro %}

{% macro spark__regexp_replace_all(expr, pattern, replacement) -%}
    {%- set java_replacement = replacement -%}
    {%- for n in range(1, 10) -%}
        {%- set java_replacement = java_replacement | replace('\\' ~ n, '$' ~ n) -%}
    {%- endfor -%}
    regexp_replace({{ expr }}, {{ pattern }}, {{ java_replacement }})
{%- endmacro %}

{#- True when the whole of `expr` matches `pattern` (null for null). Java's `$`
    also matches before a final line break; `\z` does not. -#}
{% macro regex_full_match(expr, pattern) -%}
    {{ return(adapter.dispatch('regex_full_match')(expr, pattern)) }}
{%- endmacro %}

{% macro default__regex_full_match(expr, pattern) -%}
    regexp_full_match({{ expr }}, {{ pattern }})
{%- endmacro %}

{% macro spark__regex_full_match(expr, pattern) -%}
    ({{ expr }} rlike '^(?:{{ pattern.strip()[1:-1] }})\z')
{%- endmacro %}

{#- True when `pattern` matches somewhere in `expr`. -#}
{% macro regex_contains(expr, pattern) -%}
    {{ return(adapter.dispatch('regex_contains')(expr, pattern)) }}
{%- endmacro %}

{% macro default__regex_contains(expr, pattern) -%}
    regexp_matches({{ expr }}, {{ pattern }})
{%- endmacro %}

{% macro spark__regex_contains(expr, pattern) -%}
    ({{ expr }} rlike {{ pattern }})
{%- endmacro %}

{#- `expr` starts with the text of the literal `prefix`. -#}
{% macro text_starts_with(expr, prefix) -%}
    {{ return(adapter.dispatch('text_starts_with')(expr, prefix)) }}
{%- endmacro %}

{% macro default__text_starts_with(expr, prefix) -%}
    starts_with({{ expr }}, {{ prefix }})
{%- endmacro %}

{% macro spark__text_starts_with(expr, prefix) -%}
    startswith({{ expr }}, {{ prefix }})
{%- endmacro %}

{#- The string values at JSON `paths` (a list of '$.a.b' paths) of the JSON
    text `column`, as a list: read its items with list_item(). DuckDB parses
    each document once for all paths; Spark's get_json_object once per path. -#}
{% macro json_extract_strings(column, paths) -%}
    {{ return(adapter.dispatch('json_extract_strings')(column, paths)) }}
{%- endmacro %}

{% macro default__json_extract_strings(column, paths) -%}
    json_extract_string({{ column }}, [
            {%- for path in paths %}'{{ path }}'{% if not loop.last %}, {% endif %}{% endfor -%}
        ])
{%- endmacro %}

{% macro spark__json_extract_strings(column, paths) -%}
    array(
        {%- for path in paths %}get_json_object({{ column }}, '{{ path }}'){% if not loop.last %}, {% endif %}{% endfor -%}
    )
{%- endmacro %}

{#- Item `n` (1-based, as in SQL) of the list `expr`. -#}
{% macro list_item(expr, n) -%}
    {{ return(adapter.dispatch('list_item')(expr, n)) }}
{%- endmacro %}

{% macro default__list_item(expr, n) -%}
    {{ expr }}[{{ n }}]
{%- endmacro %}

{% macro spark__list_item(expr, n) -%}
    {{ expr }}[{{ n - 1 }}]
{%- endmacro %}

{#- `name as materialized (` for a CTE read more than once: DuckDB computes it
    once; Spark has no such hint (its planner may reuse the exchange). -#}
{% macro materialized_cte() -%}
    {{ return(adapter.dispatch('materialized_cte')()) }}
{%- endmacro %}

{% macro default__materialized_cte() -%}
    materialized
{%- endmacro %}

{% macro spark__materialized_cte() -%}
{%- endmacro %}

{#- `name as not materialized (` for a CTE read more than once that DuckDB
    must inline (each reader scans only what it needs). Spark inlines CTEs
    unless its planner reuses the exchange: no hint. -#}
{% macro not_materialized_cte() -%}
    {{ return(adapter.dispatch('not_materialized_cte')()) }}
{%- endmacro %}

{% macro default__not_materialized_cte() -%}
    not materialized
{%- endmacro %}

{% macro spark__not_materialized_cte() -%}
{%- endmacro %}

{#- Whole seconds from `start_ts` to `end_ts`: DuckDB's date_diff('second', ...)
    counts second boundaries crossed, i.e. the difference of the epoch seconds
    with the fraction cut off. Spark's timestampdiff would truncate the
    difference instead (0.9 s to 1.1 s: 0, not 1), so its body subtracts
    unix_seconds (a naive UTC timestamp is read in the session time zone, UTC). -#}
{% macro seconds_between(start_ts, end_ts) -%}
    {{ return(adapter.dispatch('seconds_between')(start_ts, end_ts)) }}
{%- endmacro %}

{% macro default__seconds_between(start_ts, end_ts) -%}
    date_diff('second', {{ start_ts }}, {{ end_ts }})
{%- endmacro %}

{% macro spark__seconds_between(start_ts, end_ts) -%}
    (unix_seconds(cast({{ end_ts }} as timestamp)) - unix_seconds(cast({{ start_ts }} as timestamp)))
{%- endmacro %}

{#- The `value` of the row with the smallest `key` (an aggregate; a `filter`
    clause may follow). DuckDB's arg_min is Spark's min_by. -#}
{% macro arg_min_by(value, key) -%}
    {{ return(adapter.dispatch('arg_min_by')(value, key)) }}
{%- endmacro %}

{% macro default__arg_min_by(value, key) -%}
    arg_min({{ value }}, {{ key }})
{%- endmacro %}

{% macro spark__arg_min_by(value, key) -%}
    min_by({{ value }}, {{ key }})
{%- endmacro %}

{#-
    `left join` of each left row to the one `right` row with the latest
    `right_ts` <= `left_ts` among the rows whose `equal` columns match: the
    DuckDB ASOF join. `right` is a relation or a parenthesised select, `alias`
    its name in the query, `equal` a list of (left expression, right column)
    pairs. Spark has no ASOF join: each right row gets the validity interval up
    to its successor's `right_ts` (lead), and the join is a range join on it.
-#}
{% macro asof_left_join(right, alias, left_ts, right_ts, equal=[]) -%}
    {{ return(adapter.dispatch('asof_left_join')(right, alias, left_ts, right_ts, equal)) }}
{%- endmacro %}

{% macro default__asof_left_join(right, alias, left_ts, right_ts, equal) -%}
    asof left join {{ right }} as {{ alias }}
        on {% for left_expr, right_col in equal -%}
        {{ left_expr }} = {{ alias }}.{{ right_col }}
        and {% endfor -%}
        {{ left_ts }} >= {{ alias }}.{{ right_ts }}
{%- endmacro %}

{% macro spark__asof_left_join(right, alias, left_ts, right_ts, equal) -%}
    left join (
        select
            *,
            lead({{ right_ts }}) over (
                {% if equal %}partition by {% for _, right_col in equal %}{{ right_col }}{% if not loop.last %}, {% endif %}{% endfor %}{% endif %}
                order by {{ right_ts }}
            ) as _asof_next
        from {{ right }} as _asof_right
    ) as {{ alias }}
        on {% for left_expr, right_col in equal -%}
        {{ left_expr }} = {{ alias }}.{{ right_col }}
        and {% endfor -%}
        {{ left_ts }} >= {{ alias }}.{{ right_ts }}
        and ({{ alias }}._asof_next is null or {{ left_ts }} < {{ alias }}._asof_next)
{%- endmacro %}

{#- A double rounded to `digits` decimals, the same on both engines. DuckDB
    rounds the binary value (round(x * 10^d) / 10^d); Spark's round(x, d)
    rounds x's shortest decimal text, so 2717.39 * 0.095 (258.15204999...)
    gives 258.152 on DuckDB and 258.1521 on Spark. Spark's body spells out
    DuckDB's arithmetic. -#}
{% macro round_double(expr, digits) -%}
    {{ return(adapter.dispatch('round_double')(expr, digits)) }}
{%- endmacro %}

{% macro default__round_double(expr, digits) -%}
    round({{ expr }}, {{ digits }})
{%- endmacro %}

{% macro spark__round_double(expr, digits) -%}
    (round(({{ expr }}) * cast({{ 10 ** digits }} as double)) / cast({{ 10 ** digits }} as double))
{%- endmacro %}

{#- True when the lists `a` and `b` share an element. -#}
{% macro lists_overlap(a, b) -%}
    {{ return(adapter.dispatch('lists_overlap')(a, b)) }}
{%- endmacro %}

{% macro default__lists_overlap(a, b) -%}
    list_has_any({{ a }}, {{ b }})
{%- endmacro %}

{% macro spark__lists_overlap(a, b) -%}
    arrays_overlap({{ a }}, {{ b }})
{%- endmacro %}

{#- One output row per element of the list column `list`: `unnest_item(list)`
    is the element in the select list, `unnest_from(list)` goes right after the
    relation in the from clause. DuckDB unnests in the select list; Spark's
    explode cannot sit inside an expression ('c:' || explode(...)), so it
    becomes a lateral view there. -#}
{% macro unnest_item(list) -%}
    {{ return(adapter.dispatch('unnest_item')(list)) }}
{%- endmacro %}

{% macro default__unnest_item(list) -%}
    unnest({{ list }})
{%- endmacro %}

{% macro spark__unnest_item(list) -%}
    _unnested_{{ list }}
{%- endmacro %}

{% macro unnest_from(list) -%}
    {{ return(adapter.dispatch('unnest_from')(list)) }}
{%- endmacro %}

{% macro default__unnest_from(list) -%}
{%- endmacro %}

{% macro spark__unnest_from(list) -%}
    lateral view explode({{ list }}) _unnested as _unnested_{{ list }}
{%- endmacro %}

{#- Aggregate: the distinct non-null values of `expr` over the rows where
    `condition` holds, as a sorted list; null when there are none (DuckDB's
    list over no rows; Spark's collect_set would give an empty array). -#}
{% macro sorted_set_agg(expr, condition) -%}
    {{ return(adapter.dispatch('sorted_set_agg')(expr, condition)) }}
{%- endmacro %}

{% macro default__sorted_set_agg(expr, condition) -%}
    list(distinct {{ expr }} order by {{ expr }}) filter (
            where {{ condition }}
        )
{%- endmacro %}

{% macro spark__sorted_set_agg(expr, condition) -%}
    case
        when count({{ expr }}) filter (where {{ condition }}) > 0
            then array_sort(collect_set({{ expr }}) filter (where {{ condition }}))
    end
{%- endmacro %}

{#- Aggregate: the first `n` values of `expr` in sort order over the rows where
    `condition` holds (duplicates kept); null when there are none. -#}
{% macro sorted_list_head_agg(expr, condition, n) -%}
    {{ return(adapter.dispatch('sorted_list_head_agg')(expr, condition, n)) }}
{%- endmacro %}

{% macro default__sorted_list_head_agg(expr, condition, n) -%}
    list({{ expr }} order by {{ expr }}) filter (where {{ condition }})[1:{{ n }}]
{%- endmacro %}

{% macro spark__sorted_list_head_agg(expr, condition, n) -%}
    case
        when count(*) filter (where {{ condition }}) > 0
            then slice(array_sort(collect_list({{ expr }}) filter (where {{ condition }})), 1, {{ n }})
    end
{%- endmacro %}

{#- Aggregate: `head` followed by the non-null values of `expr`, without
    duplicates (the order is not defined on either engine; read it as a set). -#}
{% macro distinct_list_with_agg(head, expr) -%}
    {{ return(adapter.dispatch('distinct_list_with_agg')(head, expr)) }}
{%- endmacro %}

{% macro default__distinct_list_with_agg(head, expr) -%}
    list_distinct(
            list_concat([{{ head }}], coalesce(list({{ expr }}), []))
        )
{%- endmacro %}

{% macro spark__distinct_list_with_agg(head, expr) -%}
    array_distinct(concat(array({{ head }}), collect_list({{ expr }})))
{%- endmacro %}

{#- A struct of named fields, `fields` a list of (name, expression) pairs.
    DuckDB's struct_pack(name := expr, ...) is Spark's named_struct. -#}
{% macro struct_of(fields) -%}
    {{ return(adapter.dispatch('struct_of')(fields)) }}
{%- endmacro %}

{% macro default__struct_of(fields) -%}
    struct_pack({% for name, expr in fields %}{{ name }} := {{ expr }}{% if not loop.last %}, {% endif %}{% endfor %})
{%- endmacro %}

{% macro spark__struct_of(fields) -%}
    named_struct({% for name, expr in fields %}'{{ name }}', {{ expr }}{% if not loop.last %}, {% endif %}{% endfor %})
{%- endmacro %}

{#- The `value` of the row with the largest `key` (an aggregate; a `filter`
    clause may follow). DuckDB's arg_max is Spark's max_by; both order a
    struct key field by field. -#}
{% macro arg_max_by(value, key) -%}
    {{ return(adapter.dispatch('arg_max_by')(value, key)) }}
{%- endmacro %}

{% macro default__arg_max_by(value, key) -%}
    arg_max({{ value }}, {{ key }})
{%- endmacro %}

{% macro spark__arg_max_by(value, key) -%}
    max_by({{ value }}, {{ key }})
{%- endmacro %}

{#- ISO day of the week of the date or timestamp `expr`: Monday 1 ... Sunday
    7. DuckDB's isodow; Spark's weekday counts Monday 0 ... Sunday 6 (its
    dayofweek starts on Sunday). -#}
{% macro weekday_iso(expr) -%}
    {{ return(adapter.dispatch('weekday_iso')(expr)) }}
{%- endmacro %}

{% macro default__weekday_iso(expr) -%}
    isodow({{ expr }})
{%- endmacro %}

{% macro spark__weekday_iso(expr) -%}
    (weekday({{ expr }}) + 1)
{%- endmacro %}

{#- Days from the date `start_date` to the date `end_date` (negative when
    `end_date` is earlier), a BIGINT as DuckDB's date_diff('day', ...) gives;
    Spark's datediff takes the end first and returns an INT. -#}
{% macro days_between(start_date, end_date) -%}
    {{ return(adapter.dispatch('days_between')(start_date, end_date)) }}
{%- endmacro %}

{% macro default__days_between(start_date, end_date) -%}
    date_diff('day', {{ start_date }}, {{ end_date }})
{%- endmacro %}

{% macro spark__days_between(start_date, end_date) -%}
    cast(datediff({{ end_date }}, {{ start_date }}) as bigint)
{%- endmacro %}

{#- `numerator` / `denominator` as a DOUBLE, for decimal (or integer)
    operands. DuckDB divides decimals as doubles (the same result as casting
    both operands first); Spark divides them as decimals, rounded to a
    6-digit scale (0.428571, not 0.42857142857142855), so its body casts
    first. Pass a compound denominator in parentheses. -#}
{% macro quotient_double(numerator, denominator) -%}
    {{ return(adapter.dispatch('quotient_double')(numerator, denominator)) }}
{%- endmacro %}

{% macro default__quotient_double(numerator, denominator) -%}
    {{ numerator }} / {{ denominator }}
{%- endmacro %}

{% macro spark__quotient_double(numerator, denominator) -%}
    (cast({{ numerator }} as double) / cast({{ denominator }} as double))
{%- endmacro %}

{#- A date part (`year`, `month`, `day`) of `expr` as a BIGINT on both
    engines: DuckDB's year()/month()/day() return BIGINT, Spark's INT. -#}
{% macro date_part_bigint(part, expr) -%}
    {{ return(adapter.dispatch('date_part_bigint')(part, expr)) }}
{%- endmacro %}

{% macro default__date_part_bigint(part, expr) -%}
    {{ part }}({{ expr }})
{%- endmacro %}

{% macro spark__date_part_bigint(part, expr) -%}
    cast({{ part }}({{ expr }}) as bigint)
{%- endmacro %}
