"""Music generation end to end against a real `mlflow server` and a real local Ray.

Given six chorales of the corpus inside music21, when `recur run` imports them as note events,
trains an lm one epoch and evaluates it, then MLflow holds the held-out perplexity beside the
unigram and bigram references and each sample as a MIDI file (which parses back with music21) and
a piano roll, and `recur generate` on the registered model writes a MIDI file and a piano roll.
"""

from __future__ import annotations

import math

import pytest
from mlflow import MlflowClient

from pipeline.cli import main

pytestmark = pytest.mark.slow
music21 = pytest.importorskip("music21", reason="the music extra: pip install 'recur[music]'")

MODEL = "e2e-chorales"
CHORALES = ["bwv66.6", "bwv10.7", "bwv101.7", "bwv102.7", "bwv103.6", "bwv104.6"]


def test_chorales_run_logs_midi_and_piano_roll_and_generate_writes_midi(ray_local, mlflow_server, tmp_path,
                                                                       capsys):
    paths = ", ".join(f"'music21:bach/{name}.mxl'" for name in CHORALES)
    config = tmp_path / "chorales.yaml"
    config.write_text(
        "data:\n"
        "  task: lm\n"
        f"  source: {{format: music, paths: [{paths}], parts: [Soprano, Alto, Tenor, Bass]}}\n"
        "  val_fraction: 0.2\n"
        "  test_fraction: 0.2\n"
        "  batch_size: 2\n"
        "model: {cell: gru, hidden_size: 16}\n"
        "train: {epochs: 1, bptt: 32, lr: 0.01, early_stopping_patience: 0}\n"
        "generate: {samples: 1, length: 60}\n"
        f"registry: {{model_name: {MODEL}, metric: perplexity}}\n"
        "tracking: {experiment: e2e-chorales}\n"
        "resources: {num_workers: 0}\n"
    )
    # when the pipeline runs
    assert main(["run", str(config), "--set", f"data.root={tmp_path / 'dataset'}",
                 "--set", f"tracking.tracking_uri={mlflow_server}",
                 "--set", f"tracking.runs_dir={tmp_path / 'runs'}"]) == 0
    out = capsys.readouterr().out
    # then the summary shows the model's perplexity beside both references
    assert "test perplexity" in out and "test unigram perplexity" in out and "test bigram perplexity" in out

    client = MlflowClient(mlflow_server)
    (run,) = client.search_runs([client.get_experiment_by_name("e2e-chorales").experiment_id])
    metrics = run.data.metrics
    for key in ("test_perplexity", "test_unigram_perplexity", "test_bigram_perplexity",
                "test_baseline_perplexity", "test_baseline_bigram_perplexity"):
        assert math.isfinite(metrics[key]) and metrics[key] > 1, key
    # and the sample is a MIDI file that parses back, beside its piano roll
    run_id = run.info.run_id
    assert "plots/piano_roll_1.png" in [a.path for a in client.list_artifacts(run_id, "plots")]
    midi = client.download_artifacts(run_id, "eval/sample_1.mid", str(tmp_path))
    assert isinstance(music21.converter.parse(midi), music21.stream.Score)

    # when a new piece is generated from the registered model
    target = tmp_path / "new.mid"
    assert main(["generate", f"{MODEL}/1", "--length", "80", "--midi", str(target),
                 "--tracking-uri", mlflow_server]) == 0
    # then the MIDI file and its piano roll are written, and the file parses back
    assert f"wrote {target} (MIDI) and {tmp_path / 'new.png'} (piano roll)" in capsys.readouterr().out
    assert (tmp_path / "new.png").read_bytes()[:4] == b"\x89PNG"
    assert isinstance(music21.converter.parse(str(target)), music21.stream.Score)
