"""`python -m benchmarks NAME [options]`: run one benchmark (see `python -m benchmarks --help`)."""

from __future__ import annotations

import argparse
import importlib
import sys

BENCHMARKS = {
    "tune": ("benchmarks.tune_schedulers", "ASHA against FIFO random search on JapaneseVowels"),
    "gpu": ("benchmarks.gpu", "LSTM/GRU tokens/s, MFU and memory: fp32, fp16, bf16, cudnn.benchmark; NCCL"),
    "ingest": ("benchmarks.ingest", "Ray Data ingest against the training step: time spent waiting for data"),
    "overhead": ("benchmarks.overhead", "epoch time: recur's Ray Train path (1, 2 workers) / plain PyTorch"),
    "quickstart": ("benchmarks.quickstart", "wall time of recur run configs/quickstart.yaml split by phase"),
    "bucketing": ("benchmarks.bucketing", "length-bucketed against random batches: padding and sequences/s"),
    "stream": ("benchmarks.stream", "10 GB streamed through one epoch against 1 GB: memory stays bounded"),
    "load": ("benchmarks.load", "a 32-trial study and batch prediction over 1M sequences: peak memory"),
    "ucr": ("benchmarks.ucr", "configs/classify.yaml on UCR/UEA folders against 1-NN DTW and Euclidean"),
    "forecast-panel": ("benchmarks.forecast_panel", "configs/forecast.yaml on CSV series: MASE against "
                       "seasonal naive"),
    "text-classes": ("benchmarks.text_classes", "configs/classify-text.yaml on labelled texts against a "
                     "bag-of-words logistic regression"),
    "peers": ("benchmarks.peers", "configs/forecast.yaml against neuralforecast's LSTM/AutoLSTM and Darts' "
              "RNNModel: MASE, fit/predict time, memory"),
    "chorales": ("benchmarks.chorales", "configs/lm-chorales.yaml: held-out perplexity against add-one "
                 "unigram and bigram models of the same note-event tokens"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("name", choices=sorted(BENCHMARKS),
                        help="; ".join(f"{k}: {v[1]}" for k, v in BENCHMARKS.items()))
    args, rest = parser.parse_known_args(argv)
    return importlib.import_module(BENCHMARKS[args.name][0]).main(rest)


if __name__ == "__main__":
    sys.exit(main())
