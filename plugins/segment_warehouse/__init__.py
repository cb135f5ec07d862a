"""Customer-segmentation warehouse: the logic behind the Airflow DAGs.

DAG files in ``dags/`` stay thin and call into this package; Airflow puts
``plugins/`` on ``sys.path`` so ``import segment_warehouse`` works in tasks.
"""
