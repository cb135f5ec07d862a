"""segment_pipeline: landing files -> raw -> dbt -> validation -> published snapshot.

    prepare_warehouse
      -> load_crm, load_analytics, load_transactions, load_erasure   (pool: duckdb_writer)
      -> apply_erasure
      -> dbt_build: dbt_producer_watcher (the one `dbt build`, pool duckdb_writer)
                    -> one task per dbt model (+ one for its data tests) showing its result
      -> validate_warehouse -> publish_snapshot -> refresh_exports
The dbt task group is rendered by astronomer-cosmos (WATCHER mode) from the dbt
manifest; the producer also regenerates the dbt lineage docs when the dbt project
changed. publish_snapshot emits the customer_profiles Asset, which triggers
recluster_segments; refresh_exports re-exports the audiences from the new snapshot
so that an erasure or a consent withdrawal reaches the exports in this run. All
logic lives in plugins/segment_warehouse (dbt_airflow.py for the dbt tasks;
docs/airflow.md for why and how they retry).

Runs daily at 02:00 UTC **and** when new files land: the landing Asset's watcher
(landing_watch.py, run by `airflow triggerer`) emits one event per batch of new
settled files; events that arrive while a run is active wait and start one next
run (max_active_runs=1). Asset-triggered runs have no logical date: their as-of
date is derived from the triggering events (prepare_warehouse's XCom says which).
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Asset, AssetOrTimeSchedule, CronTriggerTimetable, dag, task

from segment_warehouse import dbt_airflow, landing_watch, tasks

PROFILES = Asset(tasks.PROFILES_ASSET_URI)
LANDING = landing_watch.landing_asset()


@dag(
    dag_id="segment_pipeline",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 2 * * *", timezone="UTC"), assets=[LANDING]
    ),
    start_date=pendulum.parse(tasks.DAG_START_DATE, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=tasks.DEFAULT_ARGS,
    tags=["segments", "warehouse"],
    doc_md=__doc__,
)
def segment_pipeline() -> None:
    @task
    def prepare_warehouse(ds: str | None = None, triggering_asset_events=None):
        prepared = tasks.prepare_warehouse()
        # the run's as-of date and its rule, recorded with the run (no ds when asset-triggered)
        return {**prepared, **landing_watch.run_as_of(ds, triggering_asset_events)}

    @task(task_id="load_crm")
    def load_crm(run_id: str | None = None):
        return tasks.load_source("crm", run_id)

    @task(task_id="load_analytics")
    def load_analytics(run_id: str | None = None):
        return tasks.load_source("analytics", run_id)

    @task(task_id="load_transactions")
    def load_transactions(run_id: str | None = None):
        return tasks.load_source("transactions", run_id)

    @task(task_id="load_erasure")
    def load_erasure(run_id: str | None = None):
        return tasks.load_source("erasure", run_id)

    @task
    def apply_erasure(run_id: str | None = None):
        return tasks.apply_erasure(run_id)

    # A failed critical expectation is not transient: no retries.
    @task(retries=0)
    def validate_warehouse(run_id: str | None = None):
        return tasks.validate(["raw", "staging", "marts"], run_id)

    @task(outlets=[PROFILES])
    def publish_snapshot(run_id: str | None = None):
        # nothing to do after a skipped dbt build: the snapshot holds these marts
        return tasks.publish(run_id, marts_unless_current=True)

    @task
    def refresh_exports(run_id: str | None = None):
        return tasks.refresh_exports(run_id)

    dbt = dbt_airflow.dbt_task_group(writer_pool=tasks.WRITER_POOL, default_args=tasks.DEFAULT_ARGS)
    loads = [load_crm(), load_analytics(), load_transactions(), load_erasure()]
    (
        prepare_warehouse()
        >> loads
        >> apply_erasure()
        >> dbt
        >> validate_warehouse()
        >> publish_snapshot()
        >> refresh_exports()
    )


segment_pipeline()
