"""Recurrent training on one GPU: tokens per second, model-FLOPs utilization, memory, precision.

Side by side in one run, on recur's own encoder (`pipeline.models.RecurrentEncoder`, packed
sequences, batch_first) and recur's own training step (`pipeline.training.loop.train_step`):

* kernels: 2-layer LSTM and GRU at hidden 256, 512 and 1024, fp32 against fp16 autocast (with a
  gradient scaler) and bf16 autocast, with `torch.backends.cudnn.benchmark` off and on. A token
  costs 8*H*(I+H) forward FLOPs per layer for an LSTM (4 gates, a multiply and an add each;
  6*H*(I+H) for a GRU's 3 gates), and training about three times the forward pass. MFU is those
  FLOPs per second over the GPU's dense peak for the precision the RNN ran in (cuDNN autocast runs
  RNNs in fp16 or bf16; fp32 uses TF32 tensor cores when `allow_tf32` is on, as PyTorch's default
  for cuDNN is). Peak device memory is reported per configuration.
* sync: recur's epoch loop (loss and norm sums kept on the device) against the same loop reading
  the loss and the gradient norm to the host after every step, and a fused Adam against the
  per-parameter one.
* ddp: one data-parallel rank with the NCCL backend (what Ray Train sets up on GPUs) trains a
  classifier through recur's loop with fp16 autocast; it checks that the loss goes down.

1 worker against 2 workers sharing one GPU is not a scaling result, and this benchmark does not
report one.

    python -m benchmarks gpu [--quick] [--batch 64] [--steps 256]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

# Dense (no sparsity) tensor-core peaks in TFLOP/s, from NVIDIA's data sheets; fp32 is TF32.
PEAK_TFLOPS = {
    "H100 80GB HBM3": {"fp32": 494.7, "fp16": 989.4, "bf16": 989.4},  # SXM5
    "H100 PCIe": {"fp32": 378.0, "fp16": 756.0, "bf16": 756.0},
    "H200": {"fp32": 494.7, "fp16": 989.4, "bf16": 989.4},
    "A100": {"fp32": 156.0, "fp16": 312.0, "bf16": 312.0},
    "L4": {"fp32": 60.0, "fp16": 121.0, "bf16": 121.0},
}


def peak_tflops(name: str, precision: str) -> float | None:
    for key, peaks in PEAK_TFLOPS.items():
        if key in name:
            return peaks[precision]
    return None


def train_flops_per_token(cell: str, input_size: int, hidden: int, layers: int) -> float:
    gates = {"lstm": 4, "gru": 3}[cell]
    forward = sum(2 * gates * hidden * ((input_size if layer == 0 else hidden) + hidden)
                  for layer in range(layers))
    return 3 * forward


class Regressor(nn.Module):
    """recur's encoder and a linear head over every step; the loss is a per-step MSE."""

    def __init__(self, cell: str, hidden: int, layers: int) -> None:
        super().__init__()
        from pipeline.models import RecurrentEncoder

        self.encoder = RecurrentEncoder(input_size=hidden, hidden_size=hidden, num_layers=layers, cell=cell)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        outputs, _ = self.encoder.run(x, lengths)
        return self.head(outputs).squeeze(-1)


class RegressionTask:
    """The part of `pipeline.tasks.Task` that `train_step` and `train_epoch` use."""

    def start_epoch(self, train: bool) -> None:
        pass

    def loss_weight(self, batch: dict[str, torch.Tensor]) -> int:
        return int(batch["x"].shape[0])

    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor], *, train: bool) -> torch.Tensor:
        return model(batch["x"], batch["lengths"])

    def loss(self, outputs: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return nn.functional.mse_loss(outputs.float(), batch["y"])


def _batch(batch: int, steps: int, hidden: int, device: torch.device) -> dict[str, torch.Tensor]:
    g = torch.Generator(device="cpu").manual_seed(0)
    return {"x": torch.randn(batch, steps, hidden, generator=g).to(device),
            "y": torch.randn(batch, steps, generator=g).to(device),
            "lengths": torch.full((batch,), steps, dtype=torch.int64)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_steps(step, iters: int, device: torch.device) -> float:
    for _ in range(3):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        step()
    _sync(device)
    return (time.perf_counter() - start) / iters


def _peak_memory_mib(device: torch.device) -> int | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**20) if device.type == "cuda" else None


def kernels(device: torch.device, *, batch: int, steps: int, hiddens: list[int], iters: int,
            cells: tuple[str, ...] = ("lstm", "gru"), precisions: tuple[str, ...] | None = None,
            benchmarks: tuple[bool, ...] = (False, True)) -> list[dict]:
    from pipeline.training.loop import Precision, train_step
    from pipeline.training.optimizer import make_optimizer

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    rows = []
    if precisions is None:
        precisions = ("fp32", "fp16", "bf16") if device.type == "cuda" else ("fp32",)
    for cell in cells:
        for hidden in hiddens:
            for precision_name in precisions:
                for benchmark in benchmarks:
                    torch.backends.cudnn.benchmark = benchmark
                    torch.manual_seed(0)
                    model = Regressor(cell, hidden, 2).to(device)
                    optimizer = make_optimizer("adam", model.parameters(), lr=1e-4, device=device)
                    precision = Precision.resolve(precision_name, device)
                    scaler = precision.scaler(device)
                    data = _batch(batch, steps, hidden, device)
                    task = RegressionTask()
                    if device.type == "cuda":
                        torch.cuda.reset_peak_memory_stats(device)

                    def step(model=model, optimizer=optimizer, data=data, task=task,
                             scaler=scaler, precision=precision):
                        train_step(model, data, optimizer, task, grad_clip=1.0, scaler=scaler,
                                   precision=precision)

                    seconds = _time_steps(step, iters, device)
                    tokens = batch * steps
                    flops = train_flops_per_token(cell, hidden, hidden, 2) * tokens / seconds
                    peak = peak_tflops(name, precision_name)
                    rows.append({
                        "cell": cell, "hidden": hidden, "precision": precision_name,
                        "cudnn_benchmark": benchmark, "step_ms": round(seconds * 1e3, 2),
                        "tokens_per_s": round(tokens / seconds),
                        "tflops": round(flops / 1e12, 1),
                        "mfu": round(flops / 1e12 / peak, 3) if peak else None,
                        "peak_mem_mib": _peak_memory_mib(device),
                    })
                    print(_row(rows[-1]), flush=True)
                    del model, optimizer, data
    torch.backends.cudnn.benchmark = False
    return rows


def _row(r: dict) -> str:
    mfu = f"{100 * r['mfu']:5.1f}%" if r["mfu"] is not None else "   n/a"
    return (f"{r['cell']:5s} H={r['hidden']:5d} {r['precision']:5s} "
            f"cudnn.benchmark={str(r['cudnn_benchmark']):5s} "
            f"{r['step_ms']:8.2f} ms/step {r['tokens_per_s']:>10,d} tok/s {r['tflops']:6.1f} TFLOP/s "
            f"MFU {mfu} peak {r['peak_mem_mib']} MiB")


def sync_cost(device: torch.device, *, batch: int, steps: int, hidden: int, iters: int) -> dict[str, Any]:
    """recur's epoch (sums on the device) against reading loss and norm after every step, and
    fused Adam against the per-parameter loop; small steps, where launch and sync costs show."""
    from pipeline.training.loop import Precision, train_epoch, train_step
    from pipeline.training.optimizer import make_optimizer

    precision = Precision.resolve("auto", device)
    data = [_batch(batch, steps, hidden, device) for _ in range(4)]
    task = RegressionTask()
    results = {}
    for label, fused, host_reads in (("recur (fused Adam, sums on device)", True, False),
                                     ("per-step host reads", True, True),
                                     ("unfused Adam", False, False)):
        torch.manual_seed(0)
        model = Regressor("lstm", hidden, 2).to(device)
        optimizer = (make_optimizer("adam", model.parameters(), lr=1e-4, device=device) if fused
                     else torch.optim.Adam(model.parameters(), lr=1e-4))
        scaler = precision.scaler(device)
        epoch_batches = data * (iters // len(data))

        def run(model=model, optimizer=optimizer, scaler=scaler, host_reads=host_reads,
                epoch_batches=epoch_batches):
            if host_reads:
                for b in epoch_batches:
                    loss, norm = train_step(model, b, optimizer, task, grad_clip=1.0, scaler=scaler,
                                            precision=precision)
                    float(loss), float(norm)  # what the loop did before: a sync per step
            else:
                train_epoch(model, epoch_batches, optimizer, task, device=device, grad_clip=1.0,
                            scaler=scaler, precision=precision)

        run()
        _sync(device)
        start = time.perf_counter()
        run()
        _sync(device)
        results[label] = (time.perf_counter() - start) / len(epoch_batches) * 1e3
    base = results["recur (fused Adam, sums on device)"]
    for label, ms in results.items():
        print(f"  {label:38s} {ms:7.3f} ms/step  x{ms / base:5.2f}", flush=True)
    return {"step_ms": {k: round(v, 3) for k, v in results.items()},
            "ratio_to_recur": {k: round(v / base, 3) for k, v in results.items()},
            "batch": batch, "steps": steps, "hidden": hidden}


def ddp_nccl(device: torch.device) -> dict[str, Any]:
    """One NCCL rank: recur's classifier, DDP-wrapped, trained by recur's loop under fp16 autocast."""
    import torch.distributed as dist

    from pipeline.config import ModelConfig, RecurConfig
    from pipeline.data.preprocess import Preprocessing
    from pipeline.models import build_model
    from pipeline.tasks.classify import ClassifyTask
    from pipeline.training.loop import Precision, train_epoch
    from pipeline.training.optimizer import make_optimizer

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29533")
    cuda = device.type == "cuda"
    dist.init_process_group("nccl" if cuda else "gloo", rank=0, world_size=1,
                            **({"device_id": device} if cuda else {}))
    try:
        torch.manual_seed(0)
        g = torch.Generator().manual_seed(0)
        batches = []
        for _ in range(16):
            lengths = torch.randint(5, 40, (64,), generator=g)
            x = torch.randn(64, int(lengths.max()), 12, generator=g)
            x = x * (torch.arange(x.shape[1])[None, :] < lengths[:, None])[..., None]
            batches.append({"x": x, "lengths": lengths, "y": (x[..., 0].sum(1) > 0).long()})
        task = ClassifyTask(Preprocessing(mean=[0.0] * 12, std=[1.0] * 12, labels=["neg", "pos"]),
                            RecurConfig())
        model = build_model(ModelConfig(cell="lstm", hidden_size=128, num_layers=2), input_size=12,
                            num_classes=2).to(device)
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if cuda else None)
        optimizer = make_optimizer("adam", model.parameters(), lr=3e-3, device=device)
        precision = Precision.resolve("auto", device)
        losses = [train_epoch(model, batches, optimizer, task, device=device, grad_clip=1.0,
                              scaler=precision.scaler(device), precision=precision).loss
                  for _ in range(8)]
        print(f"  backend {dist.get_backend()}, precision {precision.name}, epoch losses "
              + " ".join(f"{v:.3f}" for v in losses), flush=True)
        return {"backend": dist.get_backend(), "precision": precision.name, "losses": losses,
                "loss_went_down": losses[-1] < 0.7 * losses[0]}
    finally:
        dist.destroy_process_group()


def ray_train(device: torch.device, *, rows: int, epochs: int) -> dict[str, Any]:
    """recur's own TorchTrainer (`build_trainer`) on one GPU: Ray Data shards, NCCL, pinned
    batches, train.precision=auto (fp16), fused Adam; per-epoch time and loss from its reports."""
    import tempfile

    import ray

    from benchmarks import ReportsToFile
    from benchmarks.load import sequences
    from pipeline.config import load_config
    from pipeline.data.dataset import read_manifest, write_dataset
    from pipeline.training.resources import check_resources
    from pipeline.training.trainer import build_trainer

    tmp = tempfile.mkdtemp(prefix="recur-gpu-")
    root = f"{tmp}/data"
    write_dataset(root, {"train": sequences(rows), "val": sequences(rows // 8, seed=1),
                         "test": sequences(rows // 8, seed=2)},
                  name="generated", task="classify", labels=[str(i) for i in range(9)], sources=[],
                  import_params={"generator": "benchmarks.load", "rows": rows})
    cuda = device.type == "cuda"
    ray.init(num_cpus=min(8, os.cpu_count() or 1), num_gpus=1 if cuda else 0, include_dashboard=False)
    try:
        cfg = load_config([], [f"data.root={root}", f"resources.use_gpu={str(cuda).lower()}",
                               "resources.num_workers=1", f"resources.cpus_per_worker={2 if cuda else 1}",
                               f"train.epochs={epochs}",
                               "data.batch_size=256", "model.hidden_size=256", "model.num_layers=2",
                               "train.early_stopping_patience=0", "train.lr=0.003"])
        check_resources(cfg, ray.cluster_resources())
        reports = Path(tmp) / "reports.jsonl"
        build_trainer(cfg, read_manifest(root), storage_path=f"{tmp}/ray", name="gpu",
                      callbacks=[ReportsToFile(str(reports))]).fit()
        history = [json.loads(line) for line in reports.read_text().splitlines()]
        seconds = [round(h["epoch_seconds"], 2) for h in history]
        losses = [round(h["train_loss"], 4) for h in history]
        rates = [round(h["sequences_per_second"]) for h in history]
        print(f"  {rows} sequences, {epochs} epochs: epoch seconds {seconds}, train loss {losses}, "
              f"sequences/s {rates}", flush=True)
        return {"rows": rows, "epochs": epochs, "epoch_seconds": seconds, "train_loss": losses,
                "sequences_per_second": rates, "val_accuracy": [h["val_accuracy"] for h in history],
                "loss_went_down": len(losses) == epochs and losses[-1] < losses[0]}
    finally:
        ray.shutdown()


def padded_vs_packed(device: torch.device, *, batch: int, steps: int, hidden: int, iters: int
                     ) -> dict[str, float]:
    """The same full-length batch through cuDNN as a padded tensor and as a packed sequence
    (recur's encoder packs every batch so that pad steps never enter the recurrence)."""
    from torch.nn.utils.rnn import pack_padded_sequence

    rnn = nn.LSTM(hidden, hidden, num_layers=2, batch_first=True).to(device)
    x = torch.randn(batch, steps, hidden, device=device, requires_grad=True)
    lengths = torch.full((batch,), steps, dtype=torch.int64)
    out = {}
    for label, packed in (("padded", False), ("packed", True)):
        def step(packed=packed):
            inputs = pack_padded_sequence(x, lengths, batch_first=True) if packed else x
            y, _ = rnn(inputs)
            (y.data if packed else y).float().sum().backward()

        out[label] = round(_time_steps(step, iters, device) * 1e3, 3)
    print(f"  LSTM H={hidden} batch {batch} x {steps}: padded {out['padded']} ms, packed "
          f"{out['packed']} ms (x{out['packed'] / out['padded']:.2f})", flush=True)
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks gpu")
    parser.add_argument("--quick", action="store_true", help="hidden 256 only, fewer steps")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=256, help="time steps per sequence")
    parser.add_argument("--device", default="cuda", help="cuda, or cpu for a dry run of the code paths")
    parser.add_argument("--only", choices=["kernels", "ray"], help="one part: the kernel tables "
                        "(kernels, sync, batch sizes, padded/packed, ddp), or recur's TorchTrainer on Ray")
    parser.add_argument("--ray-rows", type=int, default=50_000)
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: the gpu benchmark needs one (nothing measured; --device cpu for a dry run)")
        return 0
    device = torch.device("cuda", 0) if args.device == "cuda" else torch.device("cpu")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (dry run)"
    print(f"{name}, torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}, "
          f"allow_tf32 (cuDNN) {torch.backends.cudnn.allow_tf32}", flush=True)
    if args.only == "ray":
        print("ray: recur's TorchTrainer on the GPU", flush=True)
        trained = ray_train(device, rows=args.ray_rows, epochs=4)
        from benchmarks import write_results

        write_results("gpu-ray", device=name, torch=torch.__version__, ray_train=trained)
        return 0 if trained["loss_went_down"] else 1
    hiddens = [256] if args.quick else [256, 512, 1024]
    iters = 5 if args.quick else 20
    print(f"kernels: 2-layer RNN, batch {args.batch} x {args.steps} steps, recur's train_step")
    rows = kernels(device, batch=args.batch, steps=args.steps, hiddens=hiddens, iters=iters)
    print("sync: small steps (batch 32 x 32 steps, hidden 128), train.precision=auto")
    sync = sync_cost(device, batch=32, steps=32, hidden=128, iters=40 if args.quick else 200)
    print("batch size: LSTM H=512 fp16, recur's train_step")
    by_batch = []
    for b in (64, 256, 1024):
        row = kernels(device, batch=b, steps=args.steps, hiddens=[512], iters=iters, cells=("lstm",),
                      precisions=("fp16",), benchmarks=(False,))[0]
        by_batch.append({"batch": b, **row})
    print("padded against packed (cuDNN), fp32")
    packing = [padded_vs_packed(device, batch=b, steps=args.steps, hidden=h, iters=iters)
               for b, h in ((64, 256), (256, 512))]
    print("ddp: one NCCL rank")
    ddp = ddp_nccl(device)
    best = {}
    for r in rows:
        key = (r["cell"], r["hidden"])
        fp32 = next(x["tokens_per_s"] for x in rows if (x["cell"], x["hidden"]) == key
                    and x["precision"] == "fp32" and not x["cudnn_benchmark"])
        best[f"{r['cell']} H={r['hidden']} {r['precision']} bench={r['cudnn_benchmark']}"] = round(
            r["tokens_per_s"] / fp32, 2)
    print("speed-up over fp32 (cudnn.benchmark off): " + ", ".join(f"{k}: x{v}" for k, v in best.items()))
    from benchmarks import write_results

    write_results("gpu" if device.type == "cuda" else "gpu-dry-run", device=name, torch=torch.__version__,
                  cudnn=torch.backends.cudnn.version(),
                  settings=vars(args), kernels=rows, speedup_over_fp32=best, sync=sync, ddp=ddp,
                  by_batch=by_batch, padded_vs_packed=packing,
                  ok=bool(ddp["loss_went_down"]) and all(math.isfinite(r["step_ms"]) for r in rows))
    return 0 if ddp["loss_went_down"] else 1
