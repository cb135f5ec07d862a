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

# CeleryExecutor (docker compose --profile celery, AIRFLOW_EXECUTOR=CeleryExecutor):
# the Celery provider, the Redis client and flower, pinned with everything they
# pull in and constrained by requirements.txt so no pin of the stack moves. Only
# in that image: the LocalExecutor image, the .venv and CI do not carry them.
# celery 5.6.3, not 5.7.0: provider 3.26.0 imports `retry` from
# celery.backends.database, which 5.7.0 removed (ImportError at executor load).
ARG AIRFLOW_EXECUTOR=LocalExecutor
ARG CELERY_REQUIREMENTS="apache-airflow-providers-celery==3.26.0 celery[redis]==5.6.3 \
    kombu[redis]==5.7.0 redis==8.1.0 flower==2.2.0 amqp==5.4.2 billiard==4.3.2 vine==5.1.0 \
    click-didyoumean==0.3.1 click-plugins==1.1.1.2 click-repl==0.4.1 prompt_toolkit==3.0.53 \
    wcwidth==0.9.4 humanize==4.17.0 prometheus_client==0.26.0 tornado==6.6.1"
# set -f: the unquoted list is split into words, never globbed (`celery[redis]`).
RUN set -f; if [ "$AIRFLOW_EXECUTOR" = CeleryExecutor ]; then \
      pip install -c /tmp/requirements.txt $CELERY_REQUIREMENTS; \
    fi

# SEGMENTS_ENGINE=spark (docs/scaling.md): a Java runtime for pyspark's local session
# and requirements-spark.txt (pyspark, dbt-spark session), constrained by
# requirements.txt so no pin of the stack moves. The duckdb image stays without them.
# The man dir: Debian's JRE post-install step writes into it, and slim images lack it.
ARG SEGMENTS_ENGINE=duckdb
COPY requirements-spark.txt /tmp/requirements-spark.txt
RUN if [ "$SEGMENTS_ENGINE" = spark ]; then \
      mkdir -p /usr/share/man/man1 \
      && apt-get update \
      && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
      && rm -rf /var/lib/apt/lists/* \
      && pip install -c /tmp/requirements.txt -r /tmp/requirements-spark.txt; \
    fi

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
