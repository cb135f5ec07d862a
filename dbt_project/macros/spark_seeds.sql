{#-
    Seeds on the Spark target. dbt-spark's own seed macros paste the declared
    column types (`varchar`, which Spark rejects without a length) and bind each
    value as '<python str>', so an empty cell arrives as the text 'None' and a
    quote breaks the statement. These overrides (dbt resolves the root
    project's spark__ macros first) map the DuckDB type names to Spark's and
    load the file with Spark's CSV reader, as dbt-duckdb loads it with
    DuckDB's: an empty cell is null, any text (also 'null', which dbt's agate
    rows turn into null) stays text.
-#}

{% macro spark_type_name(type_name) -%}
    {%- set lowered = type_name | lower | trim -%}
    {%- if lowered in ('varchar', 'text', 'char', 'bpchar') -%}string
    {%- elif lowered == 'integer' -%}int
    {%- else -%}{{ type_name }}
    {%- endif -%}
{%- endmacro %}

{% macro spark__create_csv_table(model, agate_table) %}
  {%- set column_override = model['config'].get('column_types', {}) -%}
  {%- set quote_seed_column = model['config'].get('quote_columns', None) -%}

  {% set sql %}
    create table {{ this.render() }} (
        {%- for col_name in agate_table.column_names -%}
            {%- set inferred_type = adapter.convert_type(agate_table, loop.index0) -%}
            {%- set type = spark_type_name(column_override.get(col_name, inferred_type)) -%}
            {%- set column_name = (col_name | string) -%}
            {{ adapter.quote_seed_column(column_name, quote_seed_column) }} {{ type }} {%- if not loop.last -%}, {%- endif -%}
        {%- endfor -%}
    )
    {{ file_format_clause() }}
    {{ partition_cols(label="partitioned by") }}
    {{ clustered_cols(label="clustered by") }}
    {{ location_clause() }}
    {{ comment_clause() }}
  {% endset %}

  {% call statement('_') -%}
    {{ sql }}
  {%- endcall %}

  {{ return(sql) }}
{% endmacro %}

{% macro spark__load_csv_rows(model, agate_table) %}
  {%- set column_override = model['config'].get('column_types', {}) -%}
  {%- set csv_path = model['root_path'] ~ '/' ~ model['original_file_path'] -%}
  {%- set csv_view = this.identifier ~ '__seed_csv' -%}
  {% call statement('_') -%}
    create or replace temporary view {{ csv_view }}
    using csv
    options (path '{{ csv_path }}', header 'true', inferSchema 'false', escape '"', multiLine 'true')
  {%- endcall %}
  {% set sql %}
    insert into {{ this.render() }}
    select
        {%- for col_name in agate_table.column_names %}
        {%- set inferred_type = adapter.convert_type(agate_table, loop.index0) %}
        cast({{ adapter.quote(col_name) }} as {{ spark_type_name(column_override.get(col_name, inferred_type)) }})
        {%- if not loop.last %},{% endif %}
        {%- endfor %}
    from {{ csv_view }}
  {% endset %}
  {% do adapter.add_query(sql, abridge_sql_log=True) %}
  {{ return(sql) }}
{% endmacro %}
