{#-
    Phone text -> E.164 (null when the number is not *possible*), the same
    result as the Python UDF normalise_phone(phone, country) but computed in SQL
    for the common, unambiguous forms; everything else still goes through the
    UDF (phonenumbers, ~50 us per distinct value):

        coalesce(<SQL fast path>, normalise_phone(phone, country))

    The fast path only answers when it is certain (it never returns null for a
    value it does not handle, so coalesce falls through to the UDF):
      * only digits, spaces and ( ) . - with at most a leading '+';
      * international '+CC...' or '00CC...' for the country codes below, the
        national part not starting with 0 (national prefix) or 18 (GB / AU
        carrier prefixes that phonenumbers strips), of a length phonenumbers
        calls possible (general_desc possible lengths incl. local-only, taken
        from the phonenumbers metadata), 6..13 national digits;
      * NANP: '+1' / '001' + 10 digits with a 2-9 area-code digit; national
        10 digits (optionally with the trunk 1) when the country is US, CA or
        unknown (the UDF's default region is US);
      * national '0' + digits for DE, FR, AU, NL, SE (not GB / JP: their
        national-prefix rules depend on the digits).
    tests/test_dbt_models.py::test_phone_fast_path_matches_udf compares the
    two on generated numbers of every shape.
-#}

{% macro phone_e164_fast(phone, country) -%}
    {%- set _intl_lengths = {
        '44': [6, 7, 8, 9, 10],
        '49': [6, 7, 8, 9, 10, 11, 12, 13],
        '33': [9],
        '61': [6, 7, 8, 9, 10, 12],
        '31': [6, 7, 8, 9, 10, 11],
        '46': [6, 7, 8, 9, 10, 12],
        '81': [8, 9, 10, 11, 12, 13],
    } -%}
    {%- set _national_zero_prefix = {
        'DE': '49', 'FR': '33', 'AU': '61', 'NL': '31', 'SE': '46',
    } -%}
    {%- set t = phone -%}
    {%- set d = regexp_replace_all(t, "'[^0-9]'", "''") -%}
    {%- set intl = "(case when " ~ text_starts_with(t, "'+'") ~ " then " ~ d
        ~ " when " ~ text_starts_with(t, "'00'") ~ " then substr(" ~ d ~ ", 3) end)" -%}
    case
        when not {{ regex_full_match(t, "'\+?[0-9 ().-]+'") }} then null
        when {{ text_starts_with(t, "'+'") }} or {{ text_starts_with(t, "'00'") }} then
            case
                when {{ regex_full_match(intl, "'1[2-9][0-9]{9}'") }} then '+' || {{ intl }}
                {%- for cc, lengths in _intl_lengths.items() %}
                when {{ regex_full_match(intl, "'" ~ cc ~ "[1-9][0-9]*'") }}
                    and not {{ text_starts_with(intl, "'" ~ cc ~ "18'") }}
                    and length({{ intl }}) - {{ cc | length }} in ({{ lengths | join(', ') }})
                    then '+' || {{ intl }}
                {%- endfor %}
            end
        when coalesce({{ country }}, '') in ('', 'US', 'CA')
            and {{ regex_full_match(d, "'1?[2-9][0-9]{9}'") }}
            then '+1' || right({{ d }}, 10)
        {%- for region, cc in _national_zero_prefix.items() %}
        when {{ country }} = '{{ region }}'
            and {{ regex_full_match(d, "'0[1-9][0-9]*'") }}
            and not {{ text_starts_with(d, "'018'") }}
            and length({{ d }}) - 1 in ({{ _intl_lengths[cc] | join(', ') }})
            then '+{{ cc }}' || substr({{ d }}, 2)
        {%- endfor %}
    end
{%- endmacro %}

{#- E.164 via the SQL fast path, the phonenumbers UDF for the rest. `country`
    must already be trimmed and upper-case (or null). -#}
{% macro phone_to_e164(phone, country) -%}
    coalesce({{ phone_e164_fast(phone, country) }}, normalise_phone({{ phone }}, {{ country }}))
{%- endmacro %}
