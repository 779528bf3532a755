# PacBook warehouse image: Airflow 3.3.2 on Python 3.11 (the official image), extended with the
# project's exact pins (requirements.txt, the same file the native path installs), its DAGs and code,
# and the dbt manifest Cosmos renders the DAG from. Built by `docker compose build`.
FROM apache/airflow:3.3.2-python3.11

ENV AIRFLOW_HOME=/opt/airflow \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/airflow/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/airflow/plugins \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    PYTHONPATH=/opt/airflow \
    PACBOOK_STATE_DIR=/opt/airflow/.state \
    XDG_RUNTIME_DIR=/opt/airflow/.state/runtime \
    AIRFLOW__COSMOS__CACHE_DIR=/opt/airflow/.state/cosmos \
    AIRFLOW__COSMOS__ENABLE_TELEMETRY=False \
    DO_NOT_TRACK=1 \
    SCARF_ANALYTICS=false \
    DBT_SEND_ANONYMOUS_USAGE_STATS=False

# The official image installs Python packages as the airflow user, keeping its own Airflow version
# ("Extending the image": pip install "apache-airflow==${AIRFLOW_VERSION}" -r requirements.txt).
# The image defines the airflow user (uid 50000) itself.
# hadolint ignore=DL3066
USER airflow
COPY --chown=airflow:root requirements.txt /opt/airflow/requirements.txt
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" -r /opt/airflow/requirements.txt

# dags/, include/ and plugins/: .dockerignore lets nothing else into the build context.
COPY --chown=airflow:root . /opt/airflow/

# The dbt manifest, built as `make` builds it. `dbt parse` needs no database: the PACBOOK_DBT_*
# values only satisfy profiles.yml. Inside Airflow, Cosmos builds the profile from the connection.
WORKDIR /opt/airflow/include/dbt_pacbook
RUN PACBOOK_DBT_HOST=localhost PACBOOK_DBT_PORT=5432 PACBOOK_DBT_USER=dbt_parse \
    PACBOOK_DBT_PASSWORD=dbt_parse PACBOOK_DBT_DBNAME=dbt_parse \
    dbt parse --quiet --profiles-dir . --target-path target \
    && test -s target/manifest.json \
    && rm -rf logs \
    && mkdir -p /opt/airflow/plugins /opt/airflow/logs /opt/airflow/.state/cosmos /opt/airflow/.state/runtime \
        /opt/airflow/files \
    && chmod -R g+rwX /opt/airflow/.state /opt/airflow/files target

# /opt/airflow/files is where docker-compose.yaml mounts the shared volume of the pipeline's folders
# (landing, bronze, exports, reports): a new volume takes this folder's owner and mode.
# Any AIRFLOW_UID works with group 0 (the official image's convention); the default is airflow.
WORKDIR /opt/airflow
# hadolint ignore=DL3066
USER airflow
