"""recluster_segments: customer_features -> segments.* -> validation -> snapshot.

    recluster -> validate_segments -> publish_snapshot      (pool: duckdb_writer)

Runs weekly (Monday 03:00 UTC) and whenever segment_pipeline refreshes the
customer_profiles Asset. Reclustering is a no-op when its inputs are unchanged.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, dag, task

from segment_warehouse import tasks
from segment_warehouse.tasks import PROFILES_ASSET_URI


def _schedule() -> AssetOrTimeSchedule:
    from airflow.sdk import Asset

    return AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 3 * * 1", timezone="UTC"),
        assets=[Asset(PROFILES_ASSET_URI)],
    )


@dag(
    dag_id="recluster_segments",
    schedule=_schedule(),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=tasks.DEFAULT_ARGS,
    tags=["segments", "ml"],
    doc_md=__doc__,
)
def recluster_segments() -> None:
    @task
    def recluster(run_id: str | None = None, ds: str | None = None):
        return tasks.recluster(run_id=run_id, as_of_date=ds)

    @task(retries=0)
    def validate_segments(run_id: str | None = None):
        return tasks.validate(["segments"], run_id)

    @task
    def publish_snapshot(run_id: str | None = None):
        # Only segments changed: current marts are carried over from the snapshot.
        return tasks.publish(run_id, refresh=["segments"])

    recluster() >> validate_segments() >> publish_snapshot()


recluster_segments()
