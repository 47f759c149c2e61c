"""Scheduled retraining (`recur schedule`): submit `jobs/retrain.py` to a Ray cluster on a cron
schedule and/or when the data location holds a new data version.

* `decide`: the pure decision of one tick (state, now, data version, last job status -> what to do);
* `state`: the JSON state file, replaced atomically, locked while a scheduler runs;
* `watch`: the data version at a data location, a local folder or an S3 prefix;
* `scheduler`: the loop that observes, decides, submits through `pipeline.cluster` and persists.
"""
