#!/bin/sh
# Creates recur's bucket and two MinIO users limited to it, each with its policy; idempotent (a rerun
# sets the passwords again and replaces the policies). Run by minio-init in infra/compose and by the
# Job recur-minio-init of infra/k8s/minio.yaml, logged in as the root user; the scoped users are what
# everything else gets. Reads MINIO_ENDPOINT (default http://minio:9000), MINIO_ROOT_USER,
# MINIO_ROOT_PASSWORD, S3_BUCKET, MINIO_RAY_USER/MINIO_RAY_PASSWORD (Ray: the bucket's objects, but
# no writes under mlflow/, where MLflow's artifacts and the registered models' code live: those go
# through MLflow's artifact proxy) and MINIO_MLFLOW_USER/MINIO_MLFLOW_PASSWORD (MLflow: mlflow/ only).
# Prints user and policy names, never a password.
set -eu
mc alias set local "${MINIO_ENDPOINT:-http://minio:9000}" "${MINIO_ROOT_USER}" "${MINIO_ROOT_PASSWORD}" >/dev/null
mc mb --ignore-existing "local/${S3_BUCKET}"
b="arn:aws:s3:::${S3_BUCKET}"
dir="$(mktemp -d)"
list='"s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"'
objects='"s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"'
# Ray: the bucket's objects, except writes under mlflow/
cat >"$dir/recur-ray-policy.json" <<EOF
{"Version": "2012-10-17", "Statement": [
  {"Effect": "Allow", "Action": [${list}], "Resource": ["${b}"]},
  {"Effect": "Allow", "Action": [${objects}], "Resource": ["${b}/*"]},
  {"Effect": "Deny", "Action": ["s3:PutObject", "s3:DeleteObject"], "Resource": ["${b}/mlflow/*"]}]}
EOF
# MLflow's artifact proxy: mlflow/ only
cat >"$dir/recur-mlflow-policy.json" <<EOF
{"Version": "2012-10-17", "Statement": [
  {"Effect": "Allow", "Action": [${list}], "Resource": ["${b}"]},
  {"Effect": "Allow", "Action": [${objects}], "Resource": ["${b}/mlflow/*"]}]}
EOF
for who in ray mlflow; do
  case "$who" in
    ray) user="${MINIO_RAY_USER}" password="${MINIO_RAY_PASSWORD}" ;;
    mlflow) user="${MINIO_MLFLOW_USER}" password="${MINIO_MLFLOW_PASSWORD}" ;;
  esac
  policy="recur-$who-policy"
  mc admin policy create local "$policy" "$dir/$policy.json"
  mc admin user add local "$user" "$password"   # an existing user gets the password again
  # attach fails when the policy is already attached: then check that it is
  mc admin policy attach local "$policy" --user "$user" 2>/dev/null || true
  case "$(mc admin user info local "$user")" in
    *"PolicyName:"*"$policy"*) echo "MinIO user $user: policy $policy" ;;
    *) echo "MinIO user $user has no policy $policy" >&2; exit 1 ;;
  esac
done
