"""`recur schedule`: submit retraining jobs to a Ray cluster on a cron schedule and/or on new data."""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

from pipeline.errors import CommandError
from pipeline.tracking.redact import redact_text

RETRAIN_SCRIPT = "jobs/retrain.py"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "schedule", help="submit retraining jobs on a cron schedule and/or when the data changes",
        description="Run a scheduler that submits `python jobs/retrain.py --config ...` to the Ray "
        "cluster's Jobs API: at every --cron time and/or once per new data version (--on-new-data). "
        "Its state (last data version submitted, last job and its status, next fire time) is kept "
        "in a JSON file, so a restart neither loses nor repeats a trigger.")
    p.add_argument("configs", nargs="+", metavar="CONFIG", help="YAML files, merged left to right")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one key (repeatable); passed on to the job")
    p.add_argument("--cron", metavar="EXPR",
                   help="cron expression (minute hour day month weekday), e.g. '0 3 * * *'")
    p.add_argument("--on-new-data", action="store_true",
                   help="fire once per new data version at data.source (else data.root)")
    p.add_argument("--policy", choices=["forbid", "replace"], default="forbid",
                   help="a trigger while the last job is PENDING/RUNNING: forbid skips it (default), "
                        "replace stops that job and submits")
    p.add_argument("--timezone", default="UTC", metavar="TZ", help="time zone of --cron (default UTC)")
    p.add_argument("--address", help="Ray dashboard address for the Jobs API, e.g. http://127.0.0.1:8265 "
                                     "(default: RAY_ADDRESS)")
    p.add_argument("--state", metavar="PATH",
                   help="state file (default: <tracking.runs_dir>/schedules/<model>-<id>.json)")
    p.add_argument("--poll-seconds", type=float, default=60.0, metavar="S",
                   help="seconds between checks of the data and the last job (default 60)")
    p.add_argument("--once", action="store_true", help="one tick, then exit (a Kubernetes CronJob, tests)")
    advanced = p.add_argument_group("advanced")
    advanced.add_argument("--working-dir", default=".", metavar="DIR",
                          help="uploaded as the job's working directory (default: the current folder)")
    advanced.add_argument("--entrypoint", metavar="COMMAND",
                          help="submit this command instead of `python jobs/retrain.py --config ...`")
    p.set_defaults(func=cmd_schedule)


def cmd_schedule(args: argparse.Namespace) -> int:
    from pipeline import config as config_mod
    from pipeline.cluster import resolve_address
    from pipeline.cluster.submission import plan_job
    from pipeline.scheduling.decide import ScheduleError, Triggers
    from pipeline.scheduling.scheduler import (
        JobSpec,
        Scheduler,
        default_state_path,
        parse_entrypoint,
        schedule_key,
    )
    from pipeline.scheduling.state import StateError
    from pipeline.scheduling.watch import watcher_for

    cfg = config_mod.load_config(args.configs, args.overrides)
    try:
        triggers = Triggers(cron=args.cron, on_new_data=args.on_new_data, policy=args.policy,
                            timezone=args.timezone)
    except ScheduleError as exc:
        raise CommandError(f"recur schedule: {exc}") from None
    if args.poll_seconds <= 0:
        raise CommandError("recur schedule: --poll-seconds must be > 0")
    working_dir = Path(args.working_dir)
    if not working_dir.is_dir():
        raise CommandError(f"recur schedule: --working-dir {args.working_dir} is not a folder")
    address = resolve_address(args.address)
    if args.entrypoint:
        try:
            entrypoint = parse_entrypoint(args.entrypoint)
        except ValueError as exc:
            raise CommandError(f"recur schedule: {exc}") from None
    else:
        if not (working_dir / RETRAIN_SCRIPT).is_file():
            raise CommandError(f"recur schedule: {RETRAIN_SCRIPT} not found in {working_dir.resolve()}; run "
                               "from the recur repository or pass --working-dir")
        # python jobs/retrain.py --config C... --set ..., with the config's relative paths made
        # absolute (the job runs in an uploaded copy of the working dir), as `recur submit` does
        plan = plan_job(args.configs, args.overrides, entry="retrain", address=address,
                        working_dir=args.working_dir)
        entrypoint = plan.entrypoint
        for warning in plan.warnings:
            print(f"recur schedule: warning: {redact_text(warning)}", flush=True)
    key = schedule_key(args.configs, args.overrides, entrypoint if args.entrypoint else None)
    state_path = Path(args.state) if args.state else default_state_path(
        cfg.tracking.runs_dir, cfg.registry.model_name, key)
    try:
        watcher = watcher_for(cfg)
    except ValueError as exc:
        raise CommandError(f"recur schedule: {exc}") from None
    job = JobSpec(entrypoint=entrypoint, model_name=cfg.registry.model_name, key=key,
                  configs=list(args.configs), address=address, working_dir=str(working_dir))
    scheduler = Scheduler(triggers, state_path, job, watcher)

    what = " and ".join(filter(None, [f"cron {args.cron!r} ({args.timezone})" if args.cron else "",
                                      f"new data at {watcher.location}" if args.on_new_data else ""]))
    print(redact_text(f"recur schedule: {what}; policy {args.policy}; cluster {address}"), flush=True)
    print(f"  job       {redact_text(' '.join(entrypoint))}", flush=True)
    print(f"  state     {state_path}", flush=True)

    if not args.once and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: scheduler.stop())
    try:
        return scheduler.run(poll_seconds=args.poll_seconds, once=args.once)
    except StateError as exc:
        raise CommandError(f"recur schedule: {exc}") from None
    except KeyboardInterrupt:
        print("recur schedule: stopped (Ctrl-C)", flush=True)
        return 0
