#!/usr/bin/env bash
# Write infra/compose/.env (mode 600) with random credentials for docker-compose.yml, unless it
# exists. RAY_AUTH_TOKEN is this machine's Ray token (`ray get-auth-token --generate`, written to
# ~/.ray/auth_token) when the ray CLI is on PATH, so `ray job submit` from here is let in; else a
# random one. Prints the names it wrote, never the values.
set -euo pipefail
env_file="$(cd "$(dirname "$0")" && pwd)/.env"
if [[ -e "$env_file" ]]; then echo "$env_file exists; not overwritten" >&2; exit 1; fi
random() { od -An -N24 -tx1 /dev/urandom | tr -d ' \n'; }
token=""
if command -v ray >/dev/null 2>&1; then token="$(ray get-auth-token --generate 2>/dev/null || true)"; fi
[[ -n "$token" ]] || token="$(random)$(random)"
umask 077
cat >"$env_file" <<ENV
POSTGRES_PASSWORD=$(random)
MINIO_ROOT_USER=recur
MINIO_ROOT_PASSWORD=$(random)
MINIO_RAY_USER=recur-ray
MINIO_RAY_PASSWORD=$(random)
MINIO_MLFLOW_USER=recur-mlflow
MINIO_MLFLOW_PASSWORD=$(random)
MLFLOW_AUTH_ADMIN_USERNAME=admin
MLFLOW_AUTH_ADMIN_PASSWORD=$(random)
MLFLOW_FLASK_SERVER_SECRET_KEY=$(random)
MLFLOW_RAY_USERNAME=recur
MLFLOW_RAY_PASSWORD=$(random)
RAY_AUTH_TOKEN=$token
S3_BUCKET=recur
ENV
echo "wrote $env_file: $(cut -d= -f1 "$env_file" | paste -sd' ')"
