{#-
    The one rule for an email that identifies nobody: listed in the
    blocked_identifiers seed (`blocked` is the model's import CTE of it, with
    identifier_type and lower-cased, trimmed values), or not shaped like an
    address at all. Placeholders found in the data (one value on many
    different people) are int_identifier_placeholders' job.
-#}
{% macro is_placeholder_email(email, blocked) -%}
    coalesce(
        {{ email }} in (select value from {{ blocked }} where identifier_type = 'email')
        or {{ email }} not like '%_@_%.%',
        false
    )
{%- endmacro %}
