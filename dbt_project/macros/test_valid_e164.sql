{#- Generic test: non-null values are E.164 phone numbers (+ and 8-15 digits). -#}
{% test valid_e164(model, column_name) %}
    select {{ column_name }}
    from {{ model }}
    where {{ column_name }} is not null
        and not regexp_full_match({{ column_name }}, '\+[1-9][0-9]{7,14}')
{% endtest %}
