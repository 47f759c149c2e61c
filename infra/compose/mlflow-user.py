"""Create (or reset the password of) the non-admin MLflow user that Ray jobs log in as.

Runs as the admin (MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD) against MLFLOW_TRACKING_URI;
the user's name and password come from MLFLOW_RAY_USERNAME/MLFLOW_RAY_PASSWORD. Idempotent: a
second run sets the password again, so changing it in .env and rerunning rotates it. Only the
user's name is printed. The user may create experiments and registered models (and manages those
it creates); with `default_permission = READ` it only reads the others.

  docker compose: the one-shot service mlflow-init runs it in the MLflow image.
  Kubernetes: kubectl -n recur port-forward svc/recur-mlflow 5000:5000, then with the admin's and
  the user's variables exported: MLFLOW_TRACKING_URI=http://127.0.0.1:5000 python infra/compose/mlflow-user.py
"""

import os
import sys

from mlflow.exceptions import RestException
from mlflow.server import get_app_client


def main() -> int:
    username, password = os.environ["MLFLOW_RAY_USERNAME"], os.environ["MLFLOW_RAY_PASSWORD"]
    if username == os.environ.get("MLFLOW_TRACKING_USERNAME"):
        print("MLFLOW_RAY_USERNAME must not be the admin user", file=sys.stderr)
        return 1
    client = get_app_client("basic-auth", tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
    try:
        client.create_user(username, password)
        print(f"created MLflow user {username}")
    except RestException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        client.update_user_password(username, password)
        print(f"MLflow user {username} exists; password set")
    client.update_user_admin(username, False)  # never an admin, even one made so by hand
    return 0


if __name__ == "__main__":
    sys.exit(main())
