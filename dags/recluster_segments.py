"""recluster_segments: profiles -> segments, predictions, content decisions -> snapshot.

    recluster -> predict -> decide -> measure_experiments -> validate_segments
      -> publish_snapshot -> export_audiences -> check_content_rules
                                                        (pool: duckdb_writer)

Runs weekly (Monday 03:00 UTC) and whenever segment_pipeline refreshes the
customer_profiles Asset. Asset-triggered runs have no logical date: their
as-of date is the last dbt build's. Reclustering is a no-op when its inputs
are unchanged, and a skip (previous segments kept) when there is nothing to
cluster yet. An invalid content-rules file keeps the previous decisions and
fails the run at the end, after segments and predictions are published.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, dag, task

from segment_warehouse import tasks
from segment_warehouse.tasks import PROFILES_ASSET_URI

# Validated before every publish of this DAG (expectations/<suite>.json).
SUITES = ["segments", "predictions", "personalisation", "experiments"]


def _schedule() -> AssetOrTimeSchedule:
    from airflow.sdk import Asset

    return AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 3 * * 1", timezone="UTC"),
        assets=[Asset(PROFILES_ASSET_URI)],
    )


@dag(
    dag_id="recluster_segments",
    schedule=_schedule(),
    start_date=pendulum.parse(tasks.DAG_START_DATE, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=tasks.DEFAULT_ARGS,
    tags=["segments", "ml", "personalisation"],
    doc_md=__doc__,
)
def recluster_segments() -> None:
    @task
    def recluster(run_id: str | None = None, ds: str | None = None):
        return tasks.recluster_or_skip(run_id, tasks.as_of_date(ds))

    @task
    def predict(run_id: str | None = None, ds: str | None = None):
        return tasks.predict(run_id, tasks.as_of_date(ds))

    # A rejected rules file is reported by check_content_rules, not retried here.
    @task(retries=0)
    def decide(run_id: str | None = None, ds: str | None = None):
        return tasks.decide(run_id, tasks.as_of_date(ds))

    @task
    def measure_experiments(run_id: str | None = None, ds: str | None = None):
        return tasks.measure_experiments(run_id, tasks.as_of_date(ds))

    @task(retries=0)
    def validate_segments(run_id: str | None = None):
        return tasks.validate(SUITES, run_id)

    @task
    def publish_snapshot(run_id: str | None = None):
        # Marts are carried over from the snapshot while they are current.
        return tasks.publish(run_id, refresh=["segments", "personalisation"])

    @task
    def export_audiences(run_id: str | None = None):
        return tasks.export_audiences(run_id)

    @task(retries=0)
    def check_content_rules(decide_result: dict | None = None):
        return tasks.check_content_rules(decide_result)

    decided = decide()
    (
        recluster()
        >> predict()
        >> decided
        >> measure_experiments()
        >> validate_segments()
        >> publish_snapshot()
        >> export_audiences()
        >> check_content_rules(decided)
    )


recluster_segments()
