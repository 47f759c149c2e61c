"""Ray cluster jobs: submit recur's entry points through the Ray Jobs API and look after them.

`client` talks to the Jobs API (`ray.job_submission.JobSubmissionClient`); `submission` builds
what `recur submit` sends (the entry point's argv, relative config paths made absolute).
"""

from pipeline.cluster.client import (
    DEFAULT_ADDRESS,
    ClusterError,
    follow_logs,
    job_info,
    job_logs,
    job_status,
    list_jobs,
    resolve_address,
    stop_job,
    submit_job,
)

__all__ = [
    "DEFAULT_ADDRESS",
    "ClusterError",
    "follow_logs",
    "job_info",
    "job_logs",
    "job_status",
    "list_jobs",
    "resolve_address",
    "stop_job",
    "submit_job",
]
