# Image for the docker-compose deployment: Python 3.11 + the pinned
# requirements.txt (the same file the local .venv and CI install).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    AIRFLOW_HOME=/opt/airflow \
    SEGMENTS_HOME=/opt/segments \
    DBT_SEND_ANONYMOUS_USAGE_STATS=false \
    GX_ANALYTICS_ENABLED=false

RUN apt-get update \
 && apt-get install -y --no-install-recommends tini curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 50000 airflow

COPY requirements.txt /tmp/requirements.txt
RUN pip install -r /tmp/requirements.txt

# Code is mounted by docker-compose for development; copying it too makes the
# image usable on its own (e.g. in Kubernetes).
COPY --chown=airflow:airflow dags /opt/segments/dags
COPY --chown=airflow:airflow plugins /opt/segments/plugins
COPY --chown=airflow:airflow dbt_project /opt/segments/dbt_project
COPY --chown=airflow:airflow expectations /opt/segments/expectations
COPY --chown=airflow:airflow personalisation /opt/segments/personalisation
# The product package, editable so that config.REPO_ROOT is /opt/segments (and the
# compose mounts of plugins/ are what runs). tools/ (generators, benchmarks) and
# the test tools of requirements-dev.txt are not in the image.
COPY --chown=airflow:airflow pyproject.toml /opt/segments/pyproject.toml
RUN pip install --no-deps -e /opt/segments

RUN mkdir -p /opt/airflow /opt/segments/data && chown -R airflow:airflow /opt/airflow /opt/segments/data
USER airflow
WORKDIR /opt/segments
ENTRYPOINT ["/usr/bin/tini", "--", "airflow"]
