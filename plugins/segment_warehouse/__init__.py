"""Customer-segmentation warehouse: the logic behind the Airflow DAGs.

DAG files in ``dags/`` stay thin and call into this package. It is installed
(``pip install -e .``, see pyproject.toml) and lives in Airflow's plugins
folder, as the project layout has it.
"""
