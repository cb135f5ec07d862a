{#- ISO-8601 text -> naive UTC timestamp. The session TimeZone is UTC
    (profiles.yml; spark.sql.session.timeZone on Spark), so text without an
    offset is read as UTC. -#}
{% macro to_utc_timestamp(column) -%}
    {{ return(adapter.dispatch('to_utc_timestamp')(column)) }}
{%- endmacro %}

{% macro default__to_utc_timestamp(column) -%}
    timezone('UTC', try_cast(nullif(trim({{ column }}), '') as timestamptz))
{%- endmacro %}

{#- Spark's timestamp is an instant; timestamp_ntz is the naive UTC wall time
    (the cast goes through the session time zone, UTC). -#}
{% macro spark__to_utc_timestamp(column) -%}
    cast(try_cast(nullif(trim({{ column }}), '') as timestamp) as timestamp_ntz)
{%- endmacro %}

{#- true/false/yes/no/1/0/y/n in any case -> boolean; anything else -> null. -#}
{% macro to_boolean(column) -%}
    case lower(trim({{ column }}))
        when 'true' then true
        when 'yes' then true
        when 'y' then true
        when '1' then true
        when 'false' then false
        when 'no' then false
        when 'n' then false
        when '0' then false
    end
{%- endmacro %}

{#- Trimmed, lower-case text; empty -> null. -#}
{% macro clean_lower(column) -%}
    nullif(lower(trim({{ column }})), '')
{%- endmacro %}

{#- Trimmed text; empty -> null. -#}
{% macro clean_text(column) -%}
    nullif(trim({{ column }}), '')
{%- endmacro %}

{#- Name key used to compare people: accents stripped, letters only, lower-case. -#}
{% macro name_key(column) -%}
    nullif(regexp_replace(lower(strip_accents(coalesce({{ column }}, ''))), '[^a-z]', '', 'g'), '')
{%- endmacro %}

{#-
    The logical date of the run as a SQL date literal: the `as_of_date` var when
    given (tests, manual runs), else SEGMENTS_AS_OF_DATE (set by the pipeline),
    else today in UTC. The pipeline passes an environment variable rather than
    a var because a changed --vars value makes dbt re-parse the whole project
    (~2 s at every daily run); a changed env_var only re-parses the few files
    that call this macro.
-#}
{% macro as_of_date() -%}
    cast('{{ var("as_of_date", env_var("SEGMENTS_AS_OF_DATE", run_started_at.strftime("%Y-%m-%d"))) }}' as date)
{%- endmacro %}
