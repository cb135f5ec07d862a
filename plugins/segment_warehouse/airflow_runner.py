"""Run several DAGs through Airflow's own test runner in ONE process.

Equivalent to ``airflow dags test <dag_id> <date>`` once per DAG (it calls the
same ``DAG.test()``), but Airflow, the DAG bag and the task-execution API are
started once instead of once per DAG, which saves ~10 s per ``make run``.
Stops at the first failed DAG run; exit status 1 if one failed.

    python -m segment_warehouse.airflow_runner 2026-11-22 segment_pipeline recluster_segments
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    logical_date, dag_ids = args[0], args[1:]

    from airflow.utils import timezone
    from airflow.utils.cli import get_bagged_dag
    from airflow.utils.state import DagRunState

    when = timezone.parse(logical_date)
    for dag_id in dag_ids:
        print(f"[segments] running dag_id={dag_id}", flush=True)
        dag = get_bagged_dag(bundle_names=None, dag_id=dag_id)
        run = dag.test(logical_date=when)
        print(f"[segments] finished dag_id={dag_id} state={run.state}", flush=True)
        if run.state != DagRunState.SUCCESS:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
