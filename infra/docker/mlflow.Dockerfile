# The MLflow tracking server image for infra/compose and infra/k8s: MLflow with its basic-auth app
# (Flask-WTF), the PostgreSQL driver (psycopg 3: SQLAlchemy 2.1 uses it for postgresql://) and boto3
# for S3/MinIO artifacts. No credentials are built in: they come from the environment at run time.
#
#   docker build -f infra/docker/mlflow.Dockerfile -t registry.example.com/recur-mlflow:3.17.2 infra/docker
#
# MLFLOW_VERSION must be the mlflow version constraints-cpu.txt pins (tests/infra checks it).
FROM python:3.11-slim
ARG MLFLOW_VERSION=3.17.2
RUN pip install --no-cache-dir "mlflow[auth]==${MLFLOW_VERSION}" "psycopg[binary]" boto3 \
    && useradd --uid 10001 --create-home mlflow \
    && mkdir -p /var/lib/mlflow-auth && chown 10001 /var/lib/mlflow-auth
USER 10001
WORKDIR /home/mlflow
ENV MLFLOW_DISABLE_TELEMETRY=true \
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
EXPOSE 5000
CMD ["mlflow", "server", "--host", "0.0.0.0", "--port", "5000"]
