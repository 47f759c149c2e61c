"""`recur submit` and `recur jobs`: run recur's workflows as Ray jobs on a cluster.

`recur submit CONFIG...` validates the config here, uploads the working dir to the cluster's
Jobs API (the Ray dashboard, http://127.0.0.1:8265 by default) and runs an entry point of
`jobs/` there; `recur jobs list|status|logs|stop` look after submitted jobs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import sys

from pipeline.errors import CommandError
from pipeline.tracking.redact import redact_text

ADDRESS_HELP = ("Ray dashboard (Jobs API) address, e.g. http://127.0.0.1:8265 (default: "
                "RAY_API_SERVER_ADDRESS, else RAY_ADDRESS, else http://127.0.0.1:8265)")


def cmd_submit(args: argparse.Namespace) -> int:
    from pipeline.cluster import client
    from pipeline.cluster.submission import plan_job

    if args.resume and args.entry != "tune":
        raise CommandError("--resume continues a study: it goes with --entry tune")
    if args.from_scratch and args.entry != "retrain":
        raise CommandError("--from-scratch goes with --entry retrain")
    address = client.resolve_address(args.address)
    extra = (["--resume"] if args.resume else []) + (["--from-scratch"] if args.from_scratch else [])
    plan = plan_job(args.configs, args.overrides, entry=args.entry, address=address,
                    working_dir=args.working_dir, extra_args=extra + list(args.entry_args or []))
    job_id = client.submit_job(plan.entrypoint, address=address, working_dir=args.working_dir,
                               submission_id=args.submission_id or plan.submission_id,
                               metadata=plan.metadata)
    forwarded = sorted(client.forwarded_env())
    flag = "" if args.address is None else f" --address {address}"
    if plan.localized:
        print("paths resolved on this machine (the job gets them absolute):")
        width = max(len(p.key) for p in plan.localized)
        for p in plan.localized:
            print(redact_text(f"  {p.key:<{width}}  {_short(p.given)} -> {_short(p.value)}"))
    for warning in plan.warnings:
        print(f"recur: warning: {redact_text(warning)}", file=sys.stderr)
    print(f"submitted job {job_id} to {redact_text(address)}")
    print(f"  entrypoint  {redact_text(shlex.join(plan.entrypoint))}")
    shown = ", ".join(forwarded) + " (values not shown)" if forwarded else "no MLflow/AWS settings"
    print(f"  forwarded   {shown}")
    print(f"  logs        recur jobs logs {job_id} --follow{flag}")
    print(f"  stop        recur jobs stop {job_id}{flag}")
    if address.startswith(("http://", "https://")):
        print(f"  dashboard   {address} (Jobs tab)")
    if not args.follow:
        return 0
    return _follow(job_id, address)


def _follow(job_id: str, address: str) -> int:
    from pipeline.cluster import client

    print(f"--- logs of job {job_id} (Ctrl-C stops following, not the job) ---", flush=True)
    try:
        status = client.follow_logs(job_id, address=address, out=sys.stdout)
    except KeyboardInterrupt:
        print(f"\nstopped following; job {job_id} keeps running (recur jobs stop {job_id} stops it)",
              file=sys.stderr)
        return 130
    print(f"--- job {job_id} {status} ---")
    if status != "SUCCEEDED":
        try:
            message = client.job_info(job_id, address=address).get("message")
        except CommandError:
            message = None
        if message:
            print(f"recur: job {job_id} {status}: {redact_text(message.splitlines()[0])}", file=sys.stderr)
    return 0 if status == "SUCCEEDED" else 1


def cmd_jobs_list(args: argparse.Namespace) -> int:
    from pipeline.cluster import client

    jobs = client.list_jobs(address=args.address)
    if args.json:
        print(json.dumps(jobs, indent=2, default=str))
        return 0
    if not jobs:
        print(f"no jobs on the Ray cluster at {client.resolve_address(args.address)}")
        return 0
    rows = [{
        "job": j.get("submission_id") or j.get("job_id") or "",
        "status": j["status"],
        "started": _when(j.get("start_time")),
        "seconds": _duration(j.get("start_time"), j.get("end_time")),
        "entrypoint": _short(j.get("entrypoint") or "", 70),
    } for j in jobs]
    headers = list(rows[0])
    widths = {h: max(len(h), *(len(r[h]) for r in rows)) for h in headers}
    print("  ".join(h.ljust(widths[h]) for h in headers).rstrip())
    for r in rows:
        print("  ".join(r[h].ljust(widths[h]) for h in headers).rstrip())
    return 0


def cmd_jobs_status(args: argparse.Namespace) -> int:
    from pipeline.cluster import client

    info = client.job_info(args.job, address=args.address)
    print(f"{args.job}  {info['status']}")
    if info.get("message"):
        print(f"  {redact_text(info['message'].strip().splitlines()[0])}")
    return 0


def cmd_jobs_logs(args: argparse.Namespace) -> int:
    from pipeline.cluster import client

    if args.follow:
        return _follow(args.job, client.resolve_address(args.address))
    sys.stdout.write(redact_text(client.job_logs(args.job, address=args.address)))
    return 0


def cmd_jobs_stop(args: argparse.Namespace) -> int:
    from pipeline.cluster import client

    if client.stop_job(args.job, address=args.address):
        print(f"asked job {args.job} to stop (recur jobs status {args.job} shows when it has)")
    else:
        print(f"job {args.job} had already ended: {client.job_status(args.job, address=args.address)}")
    return 0


def _short(value, limit: int = 90) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _when(ms: int | None) -> str:
    return dt.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S") if ms else "-"


def _duration(start_ms: int | None, end_ms: int | None) -> str:
    if not start_ms:
        return "-"
    end = end_ms or dt.datetime.now().timestamp() * 1000
    return f"{(end - start_ms) / 1000:.0f}"


def register(sub: argparse._SubParsersAction) -> None:
    from pipeline.cluster.submission import ENTRIES

    p = sub.add_parser("submit", help="run a workflow as a Ray job on a cluster (Jobs API)",
                       description="Validate the config here, upload the working dir and run "
                       "jobs/<entry>.py on the cluster. Relative paths of the config are resolved "
                       "on this machine and passed as --set.")
    p.add_argument("configs", nargs="*", metavar="CONFIG",
                   help="YAML files inside the working dir (at least one, except for --entry predict)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one key (repeatable)")
    p.add_argument("--address", help=ADDRESS_HELP)
    p.add_argument("--entry", choices=list(ENTRIES), default="run",
                   help="what the job runs: " + ", ".join(f"{k} ({v})" for k, v in ENTRIES.items()))
    p.add_argument("--follow", action="store_true",
                   help="stream the job's log until it ends; exit 1 unless it SUCCEEDED")
    p.add_argument("--resume", action="store_true", help="--entry tune: continue the newest study")
    p.add_argument("--from-scratch", action="store_true", help="--entry retrain: train a new model")
    p.add_argument("--entry-args", nargs=argparse.REMAINDER, metavar="ARG",
                   help="put it last: everything after it goes to the entry script, e.g. "
                   "--entry predict --entry-args MODEL --data DIR --out DIR")
    p.add_argument("--working-dir", default=".", help="folder uploaded as the job's working dir "
                   "(default: the current one; must hold jobs/ and the configs)")
    p.add_argument("--submission-id", help="job id to use (default: recur-<entry>-<time>-<random>)")
    p.set_defaults(func=cmd_submit)

    jobs = sub.add_parser("jobs", help="Ray jobs on a cluster: list, status, logs, stop")
    actions = jobs.add_subparsers(dest="action", required=True)
    p = actions.add_parser("list", help="every job of the cluster, oldest first")
    p.add_argument("--json", action="store_true", help="all fields (environment values hidden)")
    p.add_argument("--address", help=ADDRESS_HELP)
    p.set_defaults(func=cmd_jobs_list)
    for name, func, text in (("status", cmd_jobs_status, "PENDING, RUNNING, SUCCEEDED, FAILED or STOPPED"),
                             ("logs", cmd_jobs_logs, "the job's log (--follow: until it ends)"),
                             ("stop", cmd_jobs_stop, "ask a running job to stop")):
        p = actions.add_parser(name, help=text)
        p.add_argument("job", metavar="JOB", help="submission id (from recur submit or recur jobs list)")
        p.add_argument("--address", help=ADDRESS_HELP)
        if name == "logs":
            p.add_argument("--follow", action="store_true",
                           help="stream until the job ends; exit 1 unless it SUCCEEDED")
        p.set_defaults(func=func)
