# ruff: noqa: E501  (fixture rows read best one per line)
"""A tiny, internally consistent warehouse for tests and report previews.

Built with the table and column names of docs/ARCHITECTURE.md so the suites
can be exercised without dbt or the clustering stage. Every rule in
``expectations/`` passes on it; tests break one thing at a time.
"""

from __future__ import annotations

import duckdb

from segment_warehouse.warehouse import ensure_schemas

_SQL = r"""
insert into audit.load_manifest (batch_id, source, source_file, sha256, file_bytes, status,
    duplicate_of, rows_in_file, rows_loaded, rows_quarantined, loaded_at, duration_seconds) values
 ('b1','crm','crm/contacts_2024-01-01.csv','sha-a',100,'loaded',null,6,5,1,'2024-01-02 01:00:00+00',0.1),
 ('b2','crm','crm/contacts_2024-01-01_resent.csv','sha-a',100,'duplicate','crm/contacts_2024-01-01.csv',6,0,0,'2024-01-03 01:00:00+00',0.1),
 ('b1','analytics','analytics/events_2024-01-01.jsonl.gz','sha-b',300,'loaded',null,8,7,1,'2024-01-02 01:00:00+00',0.2),
 ('b1','transactions','transactions/orders_2024-01-01.csv','sha-c',200,'loaded',null,6,4,2,'2024-01-02 01:00:00+00',0.1),
 ('b1','transactions','transactions/orders_2024-01-02.csv.gz','sha-d',50,'file_quarantined',null,1,0,1,'2024-01-02 01:00:00+00',0.0);

insert into audit.quarantine (batch_id, source, source_file, line_number, reason, raw_record,
    quarantined_at) values
 ('b1','crm','crm/contacts_2024-01-01.csv',4,'required field missing: updated_at','c9,,,',now()),
 ('b1','analytics','analytics/events_2024-01-01.jsonl.gz',3,'invalid JSON line','{"messageId":',now()),
 ('b1','transactions','transactions/orders_2024-01-01.csv',3,'negative amount: total_amount','o9,...,-5',now()),
 ('b1','transactions','transactions/orders_2024-01-01.csv',5,'unknown currency: XYZ','o8,...,XYZ',now()),
 ('b1','transactions','transactions/orders_2024-01-02.csv.gz',null,'not a gzip file',null,now());

create table raw.crm_contacts as
select * from (values
 ('k1',' Ann@Example.com ','(415) 555-0100','Ann','Lee','1980-02-01','F','US','SF','94100','yes','2023-01-01T00:00:00','2023-06-01T00:00:00','crm/contacts_2024-01-01.csv',2),
 ('k1','ann@example.com','+14155550100','Ann','Lee','1980-02-01','F','US','SF','94100','yes','2023-01-01T00:00:00','2023-07-01T00:00:00','crm/contacts_2024-01-01.csv',3),
 ('k2','bob@example.org',null,'Bob','Ray',null,'male','GB','London',null,'no','2023-02-01T00:00:00','2023-02-01T00:00:00','crm/contacts_2024-01-01.csv',5),
 ('k3','cy@example.net','0044 20 7946 0958','Cy','Fox',null,null,'DE',null,null,'1','2023-03-01T00:00:00','2023-03-01T00:00:00','crm/contacts_2024-01-01.csv',6),
 ('k4',null,null,'Di','Ng',null,'female','FR',null,null,null,'2023-04-01T00:00:00','2023-04-01T00:00:00','crm/contacts_2024-01-01.csv',7)
) t(contact_id,email,phone,first_name,last_name,birth_date,gender,country,city,postal_code,
    marketing_consent,created_at,updated_at,_source_file,_line_number);

create table raw.analytics_events as
select 'm' || i as message_id, case when i % 3 = 0 then 'page' else 'track' end as type,
       'Product Viewed' as event, 'anon' || (i % 3) as anonymous_id,
       case when i < 3 then 'k1' end as user_id, '2024-01-01T10:0' || i || ':00Z' as timestamp,
       '{}' as context, '{}' as properties, null as traits,
       'analytics/events_2024-01-01.jsonl.gz' as _source_file, i + 1 as _line_number
from range(1, 8) r(i);

create table raw.transactions_orders as
select * from (values
 ('o1','k1',null,'2023-08-01T12:00:00Z','completed','USD','120.00','0','2','web',null,'transactions/orders_2024-01-01.csv',2),
 ('o2','k1',null,'2023-09-01T12:00:00Z','completed','EUR','80.00','5','1','app',null,'transactions/orders_2024-01-01.csv',4),
 ('o3','k2',null,'2023-09-05T12:00:00Z','refunded','GBP','40.00',null,'1','web',null,'transactions/orders_2024-01-01.csv',6),
 ('o4',null,'guest@example.com','2023-10-01T12:00:00Z','completed','USD','15.50',null,null,'store',null,'transactions/orders_2024-01-01.csv',7)
) t(order_id,contact_id,email,order_ts,status,currency,total_amount,discount_amount,items_count,
    channel,updated_at,_source_file,_line_number);

create table staging.stg_crm__contacts as
select contact_id,
       nullif(lower(trim(email)), '') as email,
       coalesce(email, '') in ('noemail@example.com') as is_placeholder_email,
       case contact_id when 'k1' then '+14155550100' when 'k3' then '+442079460958' end as phone_e164,
       first_name, last_name, cast(birth_date as date) as birth_date,
       case lower(gender) when 'f' then 'female' when 'female' then 'female'
            when 'male' then 'male' else 'unknown' end as gender,
       upper(country) as country, city, postal_code,
       case lower(marketing_consent) when 'yes' then true when '1' then true
            when 'no' then false end as marketing_consent,
       cast(cast(created_at as timestamptz) at time zone 'UTC' as timestamp) as created_at,
       cast(cast(updated_at as timestamptz) at time zone 'UTC' as timestamp) as updated_at,
       _source_file, _line_number, now() as _loaded_at
from raw.crm_contacts;

create table staging.stg_transactions__orders as
select order_id, contact_id, email,
       cast(cast(order_ts as timestamptz) at time zone 'UTC' as timestamp) as order_ts,
       status, currency, cast(total_amount as decimal(18,2)) as total_amount,
       cast(discount_amount as decimal(18,2)) as discount_amount,
       cast(items_count as integer) as items_count, channel, cast(null as timestamp) as updated_at,
       case currency when 'USD' then 1.0 when 'EUR' then 1.08 when 'GBP' then 1.27 end
           as fx_rate_to_reporting,
       cast(total_amount as double) * case currency when 'USD' then 1.0 when 'EUR' then 1.08
           when 'GBP' then 1.27 end as total_amount_reporting,
       coalesce(cast(discount_amount as double), 0) as discount_amount_reporting,
       _source_file, _line_number, now() as _loaded_at
from raw.transactions_orders;

create table staging.stg_analytics__events as
select message_id, type as event_type, event as event_name, anonymous_id, user_id,
       cast(cast(timestamp as timestamptz) at time zone 'UTC' as timestamp) as event_ts,
       'mobile' as device_type, 'Mozilla/5.0' as user_agent, '/p' as page_url,
       null as page_referrer, null as campaign_source, null as campaign_medium,
       null as campaign_name,
       case when message_id = 'm1' then 'ann@example.com' end as trait_email,
       case when message_id = 'm1' then '+14155550100' end as trait_phone_e164,
       false as is_bot, _source_file, _line_number, now() as _loaded_at
from raw.analytics_events;

create table intermediate.int_contacts_deduplicated as
select * from staging.stg_crm__contacts
qualify row_number() over (partition by contact_id order by updated_at desc) = 1;

create table intermediate.int_orders_deduplicated as
select * from staging.stg_transactions__orders;

create table marts.customer_profiles as
select * from (values
 ('cus_1', 2::bigint, 206.4::double, 103.2::double, true,  'active',  5, 4, 5, 'h1', 'p1'),
 ('cus_2', 0::bigint,   0.0::double, null::double, false, 'prospect', null, null, null, 'h2', null),
 ('cus_3', 0::bigint,   0.0::double, null::double, true,  'prospect', null, null, null, 'h3', 'p3'),
 ('cus_4', 0::bigint,   0.0::double, null::double, null,  'prospect', null, null, null, null, null),
 ('cus_5', 1::bigint,  15.5::double,  15.5::double, null, 'new',     4, 1, 1, 'h5', null)
) t(customer_id, orders_count, lifetime_revenue, avg_order_value, marketing_consent,
    lifecycle_stage, recency_score, frequency_score, monetary_score, email_hash, phone_hash);

create table marts.identity_map as
select * from (values
 ('crm','k1','cus_1'), ('crm','k2','cus_2'), ('crm','k3','cus_3'), ('crm','k4','cus_4'),
 ('transactions','o1','cus_1'), ('transactions','o2','cus_1'), ('transactions','o3','cus_2'),
 ('transactions','o4','cus_5'), ('analytics','anon1','cus_1')
) t(source, source_id, customer_id);

create table marts.fct_orders as
select o.order_id, m.customer_id, o.status, o.total_amount_reporting
from staging.stg_transactions__orders o
join marts.identity_map m on m.source = 'transactions' and m.source_id = o.order_id;

create table segments.customer_segments as
select * from (values
 ('cus_1', 0, 'Loyal big spenders', 'seg_run_1'),
 ('cus_3', 1, 'Browsers', 'seg_run_1'),
 ('cus_4', 1, 'Browsers', 'seg_run_1'),
 ('cus_5', 0, 'Loyal big spenders', 'seg_run_1')
) t(customer_id, segment_id, segment_name, run_id);

create table segments.segment_runs as
select 'seg_run_1' as run_id, now() as created_at, 'kmeans' as algorithm, 2 as k,
       0.41 as silhouette, 12.0 as inertia, 4 as n_profiled, 1 as n_excluded;

create table segments.segment_summary as
select * from (values
 ('seg_run_1', 0, 'Loyal big spenders', 2, 0.5),
 ('seg_run_1', 1, 'Browsers', 2, 0.5)
) t(run_id, segment_id, segment_name, size, share);
"""


def build_fixture_warehouse(con: duckdb.DuckDBPyConnection) -> None:
    """Create schemas, audit tables and a small consistent data set in ``con``."""
    ensure_schemas(con)
    con.execute(_SQL)
