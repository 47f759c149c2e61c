"""The conv/resnet/patch front-end: padding never leaks, the masked norm ignores pads, checkpoints rebuild it,
and the hybrid learns a local shape in long series."""

import copy
import math

import pytest
import torch
from conftest import padded
from torch.nn import functional as F

from pipeline.config.sections import ModelConfig
from pipeline.models import MaskedBatchNorm1d, SequenceClassifier, model_from_args
from pipeline.models.classifier import build_model
from pipeline.models.frontend import Frontend, population_statistics
from pipeline.models.instance import (
    INSTANCE_STD_FLOOR,
    instance_normalize,
    raw_view,
    raw_view_affine,
    row_normalize,
)

FRONTENDS = [("conv", 1), ("none", 4), ("conv", 4), ("resnet", 1), ("resnet", 3)]


def _model(frontend, patch, **extra):
    args = dict(input_size=2, num_classes=3, hidden_size=8, cell="gru", frontend=frontend,
                frontend_channels=6, patch=patch)
    return SequenceClassifier(**{**args, **extra})


def _trained_a_little(model, steps=3):
    """A few train-mode forwards so the norms' running statistics are not their initial values."""
    model.train()
    with torch.no_grad():
        for _ in range(steps):
            model(*padded([torch.randn(9, 2) * 3 + 1, torch.randn(4, 2)]))
    return model.eval()


@pytest.mark.parametrize("frontend,patch", FRONTENDS)
@pytest.mark.parametrize("cell,bidirectional,pooling", [
    ("gru", False, "last"), ("lstm", True, "last"), ("rnn", True, "mean"), ("gru", True, "attention"),
])
def test_eval_logits_do_not_depend_on_padding(frontend, patch, cell, bidirectional, pooling):
    # given a model with a front-end, its norms' running statistics moved off their defaults
    torch.manual_seed(0)
    model = _trained_a_little(_model(frontend, patch, cell=cell, bidirectional=bidirectional,
                                     pooling=pooling, num_layers=2))
    short = torch.randn(7, 2)  # not a multiple of the patch: its last patch is partial
    # when it is scored alone and in a batch that pads it by 14 steps of garbage
    alone = model(*padded([short]))
    x, lengths = padded([torch.randn(21, 2), short, torch.randn(10, 2)])
    x[1, 7:] = 1e3
    batched = model(x, lengths)
    # then its logits are the same
    torch.testing.assert_close(batched[1], alone[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("frontend,patch", FRONTENDS)
def test_train_mode_output_ignores_appended_pad_steps(frontend, patch):
    # given a batch in train mode (batch statistics), once as it is and once with 11 more pad
    # steps of garbage for every row
    torch.manual_seed(0)
    model = _model(frontend, patch).train()
    x, lengths = padded([torch.randn(9, 2), torch.randn(5, 2), torch.randn(3, 2)])
    longer = torch.cat([x, torch.full((3, 11, 2), -7e2)], dim=1)
    # when both run
    out, out_longer = model(x, lengths), model(longer, lengths)
    # then the outputs are the same: the pads counted in no statistic
    torch.testing.assert_close(out_longer, out, rtol=1e-5, atol=1e-5)


def test_masked_batch_norm_matches_batch_norm_over_valid_steps_only():
    # given a padded batch with garbage in its pad steps, and the same valid steps laid end to end
    torch.manual_seed(0)
    lengths = torch.tensor([6, 2, 4])
    x_BFT = torch.randn(3, 5, 6) * 2 + 1
    mask_BT = torch.arange(6) < lengths.unsqueeze(1)
    x_BFT = x_BFT.masked_fill(~mask_BT.unsqueeze(1), 1e4)
    valid_1FN = torch.cat([x_BFT[b, :, :n] for b, n in enumerate(lengths.tolist())], dim=1).unsqueeze(0)
    masked, plain = MaskedBatchNorm1d(5), torch.nn.BatchNorm1d(5)
    with torch.no_grad():
        masked.weight.uniform_(0.5, 2)
        masked.bias.uniform_(-1, 1)
    plain.load_state_dict(masked.state_dict())
    # when both normalize in train mode twice (statistics and running statistics)
    for _ in range(2):
        y_BFT = masked(x_BFT, mask_BT)
        y_1FN = plain(valid_1FN)
    # then valid steps and running statistics agree with torch's batch norm over valid steps only
    y_valid = torch.cat([y_BFT[b, :, :n] for b, n in enumerate(lengths.tolist())], dim=1).unsqueeze(0)
    torch.testing.assert_close(y_valid, y_1FN, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(masked.running_mean, plain.running_mean)
    torch.testing.assert_close(masked.running_var, plain.running_var)
    assert int(masked.num_batches_tracked) == 2
    # and in eval mode they use the running statistics the same way
    masked.eval(), plain.eval()
    torch.testing.assert_close(masked(x_BFT, mask_BT)[..., :2], plain(x_BFT)[..., :2], rtol=1e-5, atol=1e-5)


def _synced_rank(rank, world, port, x_BFT, mask_BT, out_dir):
    """One rank (a forked process) of `test_synced_batch_norm_matches_one_process_over_the_global_batch`."""
    import torch.distributed as dist

    from pipeline.models.frontend import sync_batch_statistics

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        norm = MaskedBatchNorm1d(5)
        assert sync_batch_statistics(norm) == 1
        rows = slice(rank * 2, rank * 2 + 2)  # rank 0 takes rows 0-1, rank 1 rows 2-3
        x = x_BFT[rows].clone().requires_grad_(True)
        y = norm(x, mask_BT[rows])
        # the global loss is the mean over ranks of each rank's loss, as DDP averages gradients
        ((y * torch.arange(5.0).view(1, 5, 1)).masked_fill(~mask_BT[rows].unsqueeze(1), 0).square().sum()
         / world).backward()
        torch.save((y.detach(), x.grad, norm.running_mean, norm.running_var), out_dir / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_synced_batch_norm_matches_one_process_over_the_global_batch(tmp_path):
    # given 4 padded rows, and 2 gloo ranks (processes) that each hold 2 of them, with different
    # numbers of valid steps per rank
    import multiprocessing

    from conftest import free_port

    torch.manual_seed(1)
    lengths = torch.tensor([7, 3, 5, 2])
    mask_BT = torch.arange(7) < lengths.unsqueeze(1)
    x_BFT = (torch.randn(4, 5, 7) * 3 + 2).masked_fill(~mask_BT.unsqueeze(1), 1e4)
    port = free_port()
    # when each rank normalizes its rows with synced statistics and backpropagates its share
    ranks = [multiprocessing.get_context("fork").Process(
        target=_synced_rank, args=(r, 2, port, x_BFT, mask_BT, tmp_path)) for r in range(2)]
    for process in ranks:
        process.start()
    for process in ranks:
        process.join(timeout=60)
        if process.is_alive():
            process.kill()
    assert [p.exitcode for p in ranks] == [0, 0]
    out = {r: torch.load(tmp_path / f"rank{r}.pt") for r in range(2)}
    # then outputs, input gradients and running statistics equal one process over all 4 rows
    norm = MaskedBatchNorm1d(5)
    x = x_BFT.clone().requires_grad_(True)
    y = norm(x, mask_BT)
    (y * torch.arange(5.0).view(1, 5, 1)).masked_fill(~mask_BT.unsqueeze(1), 0).square().sum().backward()
    valid = mask_BT.unsqueeze(1)
    torch.testing.assert_close(torch.cat([out[0][0], out[1][0]]).masked_fill(~valid, 0),
                               y.detach().masked_fill(~valid, 0), rtol=1e-5, atol=1e-5)
    # the global loss is the rank mean, so each rank's input gradient is half the one-process one
    torch.testing.assert_close(torch.cat([out[0][1], out[1][1]]) * 2, x.grad, rtol=1e-4, atol=1e-4)
    for rank in (0, 1):
        torch.testing.assert_close(out[rank][2], norm.running_mean)
        torch.testing.assert_close(out[rank][3], norm.running_var)


def test_a_conv_block_ignores_what_its_pad_steps_hold():
    # given one conv block (kernel 8, so a valid step near the end sees 4 steps past it) in eval mode
    from pipeline.models.frontend import ConvBlock

    torch.manual_seed(0)
    block = ConvBlock(2, 3, kernel_size=8).eval()
    mask_BT = torch.arange(10) < torch.tensor([[6], [10]])
    x_BCT = torch.randn(2, 2, 10)
    garbage_BCT = x_BCT.masked_fill(~mask_BT.unsqueeze(1), 5e2)
    # when it sees zeros or garbage past a sequence's end
    clean, dirty = block(x_BCT.masked_fill(~mask_BT.unsqueeze(1), 0.0), mask_BT), block(garbage_BCT, mask_BT)
    # then its outputs are the same, and zero at pad steps
    torch.testing.assert_close(dirty, clean)
    assert torch.all(dirty[0, :, 6:] == 0)


def test_patching_lengths_and_zeroed_pad_steps():
    # given a patch-4 front-end after conv blocks
    torch.manual_seed(0)
    frontend = Frontend(input_size=2, frontend="conv", channels=6, patch=4).eval()
    x, lengths = padded([torch.randn(9, 2), torch.randn(1, 2), torch.randn(4, 2)])
    # when it runs
    inputs_BSF, new_lengths, summary_BF = frontend(x, lengths)
    # then lengths are ceil(length / 4), every step past them is zero, and the summary is the
    # mean of the conv features (F wide)
    assert new_lengths.tolist() == [3, 1, 1]
    assert inputs_BSF.shape == (3, 3, 6) and summary_BF.shape == (3, 6)
    assert torch.all(inputs_BSF[1, 1:] == 0) and torch.all(inputs_BSF[2, 1:] == 0)
    assert torch.any(inputs_BSF[0, 2] != 0)


def test_attention_weights_are_over_patched_steps():
    # given attention pooling after patching by 4
    model = _model("conv", 4, pooling="attention").eval()
    x, lengths = padded([torch.randn(10, 2), torch.randn(3, 2)])
    # when it returns its weights
    _, weights = model(x, lengths, return_attention=True)
    # then there is one per encoder step (ceil(10 / 4) = 3), zero past each encoder length
    assert weights.shape == (2, 3)
    assert model.encoder_lengths(lengths).tolist() == [3, 1]
    assert torch.all(weights[1, 1:] == 0) and torch.allclose(weights.sum(1), torch.ones(2))


@pytest.mark.parametrize("frontend,patch", FRONTENDS)
def test_checkpoint_round_trip_gives_identical_outputs(frontend, patch):
    # given a model whose running statistics moved, saved as model_args + state dict
    torch.manual_seed(2)
    model = _trained_a_little(_model(frontend, patch, pooling="attention", bidirectional=True))
    args, state = dict(model.model_args), model.state_dict()
    assert (args["frontend"], args["frontend_channels"], args["patch"]) == (frontend, 6, patch)
    # when the model is rebuilt from them
    clone = model_from_args(args, "SequenceClassifier")
    clone.load_state_dict(state)
    # then it gives the same outputs
    x, lengths = padded([torch.randn(11, 2), torch.randn(5, 2)])
    torch.testing.assert_close(clone.eval()(x, lengths), model(x, lengths), rtol=0, atol=0)


def test_checkpoints_saved_before_front_ends_still_load():
    # given a checkpoint from before front-ends: model_args without their keys, and its weights
    torch.manual_seed(3)
    model = SequenceClassifier(input_size=2, num_classes=3, hidden_size=8, pooling="mean")
    new_keys = ("frontend", "frontend_channels", "patch")
    old_args = {k: v for k, v in model.model_args.items() if k not in new_keys}
    # when it is rebuilt
    clone = model_from_args(old_args)
    # then the weights load strictly (no new parameters or buffers) and the outputs agree
    clone.load_state_dict(model.state_dict(), strict=True)
    assert not any(key.startswith("frontend") for key in clone.state_dict())
    x, lengths = padded([torch.randn(6, 2)])
    torch.testing.assert_close(clone.eval()(x, lengths), model.eval()(x, lengths), rtol=0, atol=0)


@pytest.mark.parametrize("kwargs,match", [
    (dict(frontend="auto"), "model.frontend/model.patch 'auto'"),
    (dict(patch="auto"), "model.frontend/model.patch 'auto'"),
    (dict(frontend="fft"), "model.frontend: unknown front-end 'fft'"),
    (dict(patch=0), "model.patch: expected an integer >= 1, got 0"),
    (dict(frontend="conv", frontend_channels=0), "model.frontend_channels: expected an integer >= 1"),
])
def test_bad_front_end_arguments_name_the_config_key(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SequenceClassifier(input_size=1, num_classes=2, **kwargs)


def _local_shape_set(n, length, seed, width=40):
    """Univariate series of noise, lengths 2/3*length..length; class 0 hides a bump (half a sine),
    class 1 a ramp of the same size, each at a random place."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(length * 2 // 3, length + 1, (n,), generator=g)
    x = torch.randn(n, length, 1, generator=g)
    y = torch.arange(n) % 2
    t = torch.arange(width) / (width - 1)
    shapes = [2 * torch.sin(math.pi * t), 2 * (2 * t - 1)]
    for i in range(n):
        start = int(torch.randint(0, int(lengths[i]) - width, (1,), generator=g))
        x[i, start : start + width, 0] += shapes[int(y[i])]
        x[i, lengths[i] :] = 0
    return x, lengths, y


@pytest.fixture
def one_thread():
    """Tiny matmuls over hundreds of steps run fastest on one thread (more only contend)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_hybrid_with_patching_learns_a_local_shape_in_long_series(one_thread):
    # given 64 univariate series of length 400..600 told apart only by a 40-step local shape
    torch.manual_seed(0)
    x, lengths, y = _local_shape_set(64, 600, seed=0)
    # (seeds 0-5 reach it in 25-75 steps, about 2-4 s on one loaded CPU core)
    model = SequenceClassifier(input_size=1, num_classes=2, hidden_size=16, cell="gru", pooling="mean",
                               frontend="conv", frontend_channels=16, patch=16)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    # when it trains on batches of 16 (checked every 25 steps, at most 200 steps)
    accuracy = 0.0
    for step in range(200):
        rows = torch.randperm(64, generator=g)[:16]
        loss = F.cross_entropy(model.train()(x[rows], lengths[rows]), y[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 25 == 24:
            with torch.no_grad():
                accuracy = (model.eval()(x, lengths).argmax(1) == y).float().mean().item()
            if accuracy > 0.9:
                break
    # then it fits the train set (eval mode, running statistics)
    assert accuracy > 0.9, f"train accuracy {accuracy:.2f} after {step + 1} steps"


def test_instance_norm_classifier_sees_each_row_on_its_own_scale_and_keeps_the_scale_as_features():
    # given one sequence, and the same sequence x1000 and shifted: same shape, another scale
    # (instance_stats "dataset": how checkpoints written before "row" rebuild)
    torch.manual_seed(0)
    model = SequenceClassifier(input_size=2, num_classes=3, hidden_size=8, cell="gru", pooling="mean",
                               frontend="conv", frontend_channels=4, patch=2, instance_norm=True).eval()
    assert model.instance_stats == "dataset"
    x = torch.randn(1, 9, 2)
    lengths = torch.tensor([9])
    # the head sees H + F + 2C inputs: pooled state, conv mean, then each channel's mean and log std
    assert model.head.in_features == 8 + 4 + 2 * 2
    with torch.no_grad():
        features = {}
        model.head.register_forward_hook(lambda m, args, out: features.setdefault(len(features), args[0]))
        model(x, lengths)
        model(x * 1000 + 7, lengths)
    shape_a, shape_b = features[0][:, :-4], features[1][:, :-4]
    # then what the encoder makes of the shape is the same, and only the scale features differ
    assert torch.allclose(shape_a, shape_b, atol=1e-4)
    log_scale = torch.full((1, 2), math.log(1000.0))
    assert torch.allclose(features[1][:, -2:] - features[0][:, -2:], log_scale, atol=1e-4)


@pytest.mark.parametrize("scale", [1e-6, 1e-3, 1.0, 1e4])
def test_row_instance_stats_see_a_row_far_under_the_dataset_scale_as_a_loud_one(scale):
    # given a row as it is, and the same row `scale` times smaller or larger, offset included (a
    # quiet appliance's current is the same shape at a hundred-thousandth of a loud one's)
    torch.manual_seed(0)
    model = SequenceClassifier(input_size=2, num_classes=3, hidden_size=8, cell="gru", pooling="mean",
                               frontend="conv", frontend_channels=4, patch=2, instance_norm=True,
                               instance_stats="row").eval()
    x = torch.randn(1, 9, 2) + 0.5
    lengths = torch.tensor([9])
    features = {}
    model.head.register_forward_hook(lambda m, args, out: features.setdefault(len(features), args[0]))
    with torch.no_grad():
        model(x, lengths)
        model(x * scale, lengths)
    # then the head sees H + F + 3C inputs: pooled state, conv mean, each channel's mean, log std and
    # asinh(mean / std); the encoder, the conv mean and asinh(mean / std) see the same row, log std
    # moves by log(scale) and the mean scales
    assert model.head.in_features == 8 + 4 + 3 * 2
    a, b = features[0], features[1]
    assert torch.allclose(a[:, :-6], b[:, :-6], atol=1e-4) and torch.allclose(a[:, -2:], b[:, -2:], atol=1e-4)
    assert torch.allclose(b[:, -4:-2] - a[:, -4:-2], torch.full((1, 2), math.log(scale)), atol=1e-4)
    assert torch.allclose(b[:, -6:-4], a[:, -6:-4] * scale, rtol=1e-4, atol=1e-12)
    # while under the "dataset" floor (a thousandth of the dataset's scale) a row 10^6 times quieter
    # was a flat line: every such row the same to the encoder
    z_BTC, _, std_B1C = instance_normalize(x * 1e-6, lengths)
    assert z_BTC.abs().max() < 1e-2 and torch.equal(std_B1C, torch.full((1, 1, 2), INSTANCE_STD_FLOOR))


def test_row_normalize_floors_constant_rows_and_ignores_padding():
    # given a varying row padded with garbage, a constant row and an all-zero row
    x = torch.zeros(3, 6, 1)
    x[0, :4, 0] = torch.tensor([1.0, -2.0, 0.5, 3.0])
    x[0, 4:, 0] = 1e3
    x[1, :, 0] = 0.37
    lengths = torch.tensor([4, 6, 5])
    z_BTC, stats_BS = row_normalize(x, lengths)
    # then the varying row is z-scored over its valid steps only, pads are 0
    row = x[0, :4, 0]
    expected = (row - row.mean()) / row.std(unbiased=False)
    assert torch.allclose(z_BTC[0, :4, 0], expected, atol=1e-6) and torch.all(z_BTC[0, 4:] == 0)
    mean, std = row.mean(), row.std(unbiased=False)
    assert torch.allclose(stats_BS[0], torch.stack([mean, std.log(), torch.asinh(mean / std)]), atol=1e-6)
    # the constant rows give zeros and finite statistics: std floored at 1e-5 of the row's peak
    # (its rounding is not a shape), and at 1e-12 for the all-zero row
    assert torch.all(z_BTC[1:].abs() < 1e-2) and torch.isfinite(stats_BS).all()
    assert stats_BS[1, 1] == pytest.approx(math.log(1e-5 * 0.37), abs=1e-4)
    assert stats_BS[2].tolist() == pytest.approx([0.0, math.log(1e-12), 0.0], abs=1e-4)


def test_instance_stats_are_recorded_only_with_instance_norm_and_the_config_builds_row():
    # given model_args as a classifier with instance_norm stored them before instance_stats
    old = dict(input_size=1, num_classes=2, hidden_size=8, instance_norm=True)
    # then it rebuilds with the statistics it was trained with
    assert model_from_args(old, "SequenceClassifier").instance_stats == "dataset"
    # models without instance norm keep their arguments; built from a config, instance norm is "row"
    assert "instance_stats" not in SequenceClassifier(input_size=1, num_classes=2).model_args
    cfg = ModelConfig(cell="gru", hidden_size=8, instance_norm=True)
    built = build_model(cfg, input_size=1, num_classes=2)
    assert built.model_args["instance_stats"] == "row"
    assert model_from_args(built.model_args, "SequenceClassifier").instance_stats == "row"
    with pytest.raises(ValueError, match="instance_stats"):
        SequenceClassifier(input_size=1, num_classes=2, instance_norm=True, instance_stats="global")


def test_instance_norm_classifier_ignores_padding_and_round_trips_its_arguments():
    torch.manual_seed(0)
    model = SequenceClassifier(input_size=1, num_classes=2, hidden_size=8, instance_norm=True).eval()
    x = torch.randn(1, 6, 1)
    padded = torch.cat([x, torch.full((1, 5, 1), 1e3)], dim=1)
    with torch.no_grad():
        alone = model(x, torch.tensor([6]))
        assert torch.allclose(alone, model(padded, torch.tensor([6])), atol=1e-5)
        rebuilt = model_from_args(model.model_args, "SequenceClassifier")
        rebuilt.load_state_dict(model.state_dict())
        assert torch.equal(rebuilt.eval()(x, torch.tensor([6])), alone)


def test_raw_view_is_the_raw_values_on_one_log_scale_and_pads_are_zero():
    # given a dataset normalized with mean 0.5 and std 2, whose train rows' 10th-percentile std is 0.01
    gain, bias = raw_view_affine([0.5], [2.0], [0.01])
    raw = torch.tensor([[0.0], [0.01], [-0.03], [5e3]])  # quiet steps, then a loud one
    x = (raw - 0.5) / 2.0  # what the model sees
    x_BTC = torch.cat([x, torch.full((2, 1), 7.0)]).unsqueeze(0)  # two pad steps holding garbage
    view = raw_view(x_BTC, torch.tensor([4]), torch.tensor(gain), torch.tensor(bias))
    # then valid steps are asinh(raw / p10): linear near 0, log of the loud value, pads exactly 0
    expected = torch.asinh(raw / 0.01)
    assert torch.allclose(view[0, :4], expected, rtol=1e-5, atol=1e-5) and torch.all(view[0, 4:] == 0)
    assert view[0, 1, 0] == pytest.approx(math.asinh(1.0), abs=1e-5)
    assert view[0, 3, 0] == pytest.approx(math.log(2 * 5e5), abs=1e-3)
    # a p10 of 0 (a tenth of the rows constant) is raised to a millionth of the std, not divided by
    assert raw_view_affine([0.0], [2.0], [0.0]) == ([1e6], [0.0])


def _raw_view_model(**extra):
    gain, bias = raw_view_affine([0.0, 1.0], [1.0, 3.0], [1e-3, 0.1])
    return SequenceClassifier(input_size=2, num_classes=3, hidden_size=8, cell="gru", pooling="mean",
                              frontend="conv", frontend_channels=4, patch=2, instance_norm=True,
                              instance_stats="row", raw_view_gain=gain, raw_view_bias=bias, **extra)


def test_the_raw_view_tells_apart_rows_that_row_normalization_makes_one():
    # given a row and the same row 1000 times quieter: the row-normalized model sees them alike
    torch.manual_seed(0)
    x = torch.randn(1, 9, 2) + 0.5
    lengths = torch.tensor([9])
    plain = _raw_view_model()
    plain = SequenceClassifier(**{k: v for k, v in plain.model_args.items()
                                  if k not in ("raw_view_gain", "raw_view_bias")}).eval()
    features = []  # what the encoder gets
    plain.encoder.register_forward_pre_hook(lambda m, args: features.append(args[0]))
    with torch.no_grad():
        plain(x, lengths), plain(x * 1e-3, lengths)
    assert torch.allclose(features[0], features[1], atol=1e-4)
    # then with the raw view the front-end gets 2C channels, and the quiet row reaches the encoder
    # otherwise than the loud one
    model = _raw_view_model().eval()
    assert model.frontend.blocks[0].conv.in_channels == 4
    features.clear()
    model.encoder.register_forward_pre_hook(lambda m, args: features.append(args[0]))
    with torch.no_grad():
        model(x, lengths), model(x * 1e-3, lengths)
    assert not torch.allclose(features[0], features[1], atol=1e-2)


def test_a_raw_view_classifier_ignores_padding_and_rebuilds_from_its_arguments():
    torch.manual_seed(0)
    model = _trained_a_little(_raw_view_model())
    x = torch.randn(1, 11, 2)
    padded_x = torch.cat([x, torch.full((1, 5, 2), 1e3)], dim=1)
    with torch.no_grad():
        alone = model(x, torch.tensor([11]))
        assert torch.allclose(alone, model(padded_x, torch.tensor([11])), atol=1e-5)
        # its scale lives in model_args, not in the state dict: old state dicts load, and it rebuilds
        assert not any("raw_view" in k for k in model.state_dict())
        rebuilt = model_from_args(model.model_args, "SequenceClassifier")
        rebuilt.load_state_dict(model.state_dict())
        assert torch.equal(rebuilt.eval()(x, torch.tensor([11])), alone)
    # and a model without it records nothing of it, so checkpoints written before it rebuild as trained
    assert "raw_view_gain" not in _model("conv", 1).model_args
    with pytest.raises(ValueError, match="one value per input channel"):
        SequenceClassifier(input_size=2, num_classes=2, raw_view_gain=[1.0], raw_view_bias=[0.0])


def test_the_config_builds_a_raw_view_beside_instance_norm_from_the_manifest_scale():
    from pipeline.data.preprocess import Preprocessing

    pre = Preprocessing(mean=[0.5], std=[2.0], row_std_p10=[0.01])
    # auto: with instance norm, from the preprocessing's scale
    on = build_model(ModelConfig(cell="gru", hidden_size=8, instance_norm=True), input_size=1,
                     num_classes=2, pre=pre)
    assert (on.model_args["raw_view_gain"], on.model_args["raw_view_bias"]) == ([200.0], [50.0])
    # auto: not without instance norm, nor where the manifest predates the scale (off, as trained)
    off = build_model(ModelConfig(cell="gru", hidden_size=8, instance_norm=False), input_size=1,
                      num_classes=2, pre=pre)
    old = Preprocessing.from_dict({k: v for k, v in pre.to_dict().items() if k != "row_std_p10"})
    assert old.row_std_p10 == []
    older = build_model(ModelConfig(cell="gru", hidden_size=8, instance_norm=True), input_size=1,
                        num_classes=2, pre=old)
    assert "raw_view_gain" not in off.model_args and "raw_view_gain" not in older.model_args
    # asked for where there is no scale: an error naming the key and what to do
    with pytest.raises(ValueError, match="model.raw_view.*import the dataset again"):
        build_model(ModelConfig(cell="gru", hidden_size=8, raw_view=True), input_size=1, num_classes=2,
                    pre=old)


def _rows_at_their_own_levels(n=16, seed=0):
    """Variable-length rows whose levels differ far more than their own scale (as PigCVP's)."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(int(length), 2, generator=g) + 4.0 * torch.randn(1, 2, generator=g)
            for length in torch.randint(20, 60, (n,), generator=g)]


def test_population_statistics_are_what_one_batch_of_all_rows_normalizes_with():
    # given a front-end whose running statistics come from batches of 2 rows at unlike levels
    torch.manual_seed(0)
    front = Frontend(input_size=2, frontend="conv", channels=6)
    rows = _rows_at_their_own_levels()
    front.train()
    with torch.no_grad():
        for i in range(0, len(rows), 2):
            front(*padded(rows[i:i + 2]))
    before = front.blocks[1].norm.running_var.clone()
    whole = copy.deepcopy(front).train()  # one batch of every row: its statistics are the population's
    with torch.no_grad():
        expected_BSF = whole(*padded(rows))[0]

    # when the population statistics are taken over batches of 3 rows, each padded differently
    layers = population_statistics(front, lambda: (padded(rows[i:i + 3]) for i in range(0, len(rows), 3)),
                                   lambda model, batch: model(*batch))

    # then every layer was set, and eval mode gives what train mode gives on one batch of all rows
    # (up to the unbiased variance the running statistics keep: count / (count - 1) of ~600 steps)
    assert layers == 3 and front.training  # the mode it was in is restored
    assert all(block.norm.population is None for block in front.blocks)
    front.eval()
    assert not torch.allclose(front.blocks[1].norm.running_var, before, rtol=0.05)
    x_BTC, lengths_B = padded(rows)
    with torch.no_grad():
        got_BSF = front(x_BTC, lengths_B)[0]
    mask_BT1 = (torch.arange(x_BTC.shape[1])[None, :] < lengths_B[:, None]).unsqueeze(-1)
    torch.testing.assert_close(got_BSF * mask_BT1, expected_BSF * mask_BT1, rtol=2e-3, atol=2e-3)
    # and the first layer's statistics are the mean and (unbiased) variance of its conv's outputs
    conv = front.blocks[0]
    with torch.no_grad():
        outs = [conv.conv(F.pad(r.T.unsqueeze(0), conv.same))[0] for r in rows]  # F x T_i each
    steps_NF = torch.cat([o.T for o in outs]).double()
    torch.testing.assert_close(conv.norm.running_mean.double(), steps_NF.mean(0), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(conv.norm.running_var.double(), steps_NF.var(0), rtol=1e-5, atol=1e-5)


def test_population_statistics_do_not_depend_on_batching_and_leave_models_without_norms_alone():
    rows = _rows_at_their_own_levels(seed=1)
    fronts = [Frontend(input_size=2, frontend="conv", channels=4) for _ in range(2)]
    fronts[1].load_state_dict(fronts[0].state_dict())
    fronts[0].train()
    for front, size in zip(fronts, (1, 5)):  # one row a batch (no padding), and five
        population_statistics(front, lambda s=size: (padded(rows[i:i + s]) for i in range(0, len(rows), s)),
                              lambda model, batch: model(*batch))
    for a, b in zip(fronts[0].blocks, fronts[1].blocks):
        torch.testing.assert_close(a.norm.running_mean, b.norm.running_mean, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(a.norm.running_var, b.norm.running_var, rtol=1e-5, atol=1e-5)
    plain = Frontend(input_size=2, frontend="none", patch=4)
    passes = []
    assert population_statistics(plain, lambda: passes.append(1) or [], lambda m, b: m(*b)) == 0
    assert passes == []  # no layer, no pass over the data


def test_resnet_population_statistics_follow_the_residual_blocks_in_order():
    # given a resnet front-end (each block: three conv norms, then its shortcut's norm) trained on
    # batches of 2 rows at unlike levels
    torch.manual_seed(0)
    front = Frontend(input_size=2, frontend="resnet", channels=4)
    rows = _rows_at_their_own_levels(seed=2)
    with torch.no_grad():
        for i in range(0, len(rows), 2):
            front(*padded(rows[i:i + 2]))
        expected_BSF = copy.deepcopy(front).train()(*padded(rows))[0]
    # when the population statistics are taken in batches of 5
    layers = population_statistics(front, lambda: (padded(rows[i:i + 5]) for i in range(0, len(rows), 5)),
                                   lambda model, batch: model(*batch))
    # then all 12 norms were set, the first block's shortcut is a 1x1 conv (2 -> 4 channels) and the
    # others' the identity, and eval mode gives what train mode gives on one batch of all rows
    assert layers == 12
    assert [block.shortcut is not None for block in front.blocks] == [True, False, False]
    x_BTC, lengths_B = padded(rows)
    with torch.no_grad():
        got_BSF = front.eval()(x_BTC, lengths_B)[0]
    mask_BT1 = (torch.arange(x_BTC.shape[1])[None, :] < lengths_B[:, None]).unsqueeze(-1)
    torch.testing.assert_close(got_BSF * mask_BT1, expected_BSF * mask_BT1, rtol=2e-3, atol=2e-3)


def _head_inputs(model, x, lengths):
    """What the head of `model` sees for one forward (in the model's current mode)."""
    seen = []
    handle = model.head.register_forward_hook(lambda module, args, out: seen.append(args[0].detach()))
    try:
        with torch.no_grad():
            model(x, lengths)
    finally:
        handle.remove()
    return seen[0]


def test_branch_dropout_drops_the_recurrent_state_in_training_and_leaves_the_conv_summary():
    # given a hybrid with branch dropout 0.5 and the same weights without it
    torch.manual_seed(0)
    model = _model("conv", 2, branch_dropout=0.5)
    plain = _model("conv", 2)
    plain.load_state_dict(model.state_dict())
    x, lengths = padded([torch.randn(9, 2), torch.randn(5, 2), torch.randn(7, 2)])
    hidden = model.encoder.output_size
    # when both train (batch statistics, no other dropout: the same numbers but for the branch's)
    model.train()
    plain.train()
    dropped, kept_all = _head_inputs(model, x, lengths), _head_inputs(plain, x, lengths)
    # then the conv summary reaches the head untouched, and each recurrent feature is dropped or
    # scaled by 1 / (1 - 0.5), some of each
    torch.testing.assert_close(dropped[:, hidden:], kept_all[:, hidden:])
    kept = dropped[:, :hidden] != 0
    assert 0 < int(kept.sum()) < kept.numel()
    torch.testing.assert_close(dropped[:, :hidden][kept], 2 * kept_all[:, :hidden][kept])
    # and in eval mode it is the model without it
    assert torch.equal(model.eval()(x, lengths), plain.eval()(x, lengths))


def test_branch_dropout_is_recorded_when_set_and_needs_a_conv_front_end():
    set_ = SequenceClassifier(input_size=1, num_classes=2, frontend="conv", branch_dropout=0.8)
    assert set_.model_args["branch_dropout"] == 0.8
    assert model_from_args(set_.model_args, "SequenceClassifier").branch_dropout.p == 0.8
    # checkpoints written before it rebuild without it; a config passes it on (0 by default)
    assert "branch_dropout" not in SequenceClassifier(input_size=1, num_classes=2, frontend="conv").model_args
    assert build_model(ModelConfig(frontend="conv"), input_size=1, num_classes=2).branch_dropout.p == 0.0
    config = ModelConfig(frontend="conv", branch_dropout=0.8)
    assert build_model(config, input_size=1, num_classes=2).model_args["branch_dropout"] == 0.8
    auto = ModelConfig(frontend="conv", branch_dropout="auto")  # unresolved: as budget.resolve decides
    assert build_model(auto, input_size=1, num_classes=2).branch_dropout.p == 0.8
    no_conv = ModelConfig(branch_dropout="auto")
    assert build_model(no_conv, input_size=1, num_classes=2).branch_dropout.p == 0.0
    with pytest.raises(ValueError, match="model.branch_dropout .* needs model.frontend conv"):
        SequenceClassifier(input_size=1, num_classes=2, branch_dropout=0.5)
    with pytest.raises(ValueError, match=r"model.branch_dropout: expected a probability in \[0, 1\)"):
        SequenceClassifier(input_size=1, num_classes=2, frontend="conv", branch_dropout=1.0)


@pytest.mark.parametrize("frontend", ["none", "conv", "resnet"])
def test_receptive_field_is_the_span_one_input_step_reaches(frontend):
    # given a front-end in eval mode and a long sequence, when one input step changes, then the
    # output steps that change span exactly receptive_field(frontend) steps
    from pipeline.models.frontend import receptive_field

    torch.manual_seed(0)
    front = Frontend(input_size=1, frontend=frontend, channels=32).eval()
    x = torch.randn(1, 200, 1)
    lengths = torch.tensor([200])
    bumped = x.clone()
    bumped[0, 100, 0] += 5.0
    with torch.no_grad():
        changed = (front(bumped, lengths)[0] - front(x, lengths)[0]).abs().amax(dim=2)[0] > 0
    steps = changed.nonzero().flatten().tolist()
    assert len(steps) == steps[-1] - steps[0] + 1 == receptive_field(frontend)
    assert {"none": 1, "conv": 14, "resnet": 40}[frontend] == receptive_field(frontend)


def test_population_passes_end_at_the_layer_they_measure_and_never_run_the_recurrence():
    # given a whole classifier with a resnet front-end, trained on batches of 2 rows at unlike levels
    torch.manual_seed(0)
    model = _model("resnet", 1)
    rows = _rows_at_their_own_levels(seed=3)
    model.train()
    with torch.no_grad():
        for i in range(0, len(rows), 2):
            model(*padded(rows[i:i + 2]))
    expected_BSF = copy.deepcopy(model.frontend).train()(*padded(rows))[0]
    ran = []
    model.encoder.register_forward_hook(lambda *_: ran.append("encoder"))
    model.head.register_forward_hook(lambda *_: ran.append("head"))
    # when its population statistics are taken through the model's own forward
    layers = population_statistics(model, lambda: (padded(rows[i:i + 4]) for i in range(0, len(rows), 4)),
                                   lambda m, batch: m(*batch))
    # then every pass stopped at its layer: the recurrence and the head never ran (before: 12 full
    # forwards of the model over the data), and the statistics are the population's all the same
    assert layers == 12 and ran == []
    x_BTC, lengths_B = padded(rows)
    with torch.no_grad():
        got_BSF = model.frontend.eval()(x_BTC, lengths_B)[0]
        model.eval()(x_BTC, lengths_B)  # and the model runs whole again afterwards
    assert ran == ["encoder", "head"]
    mask_BT1 = (torch.arange(x_BTC.shape[1])[None, :] < lengths_B[:, None]).unsqueeze(-1)
    torch.testing.assert_close(got_BSF * mask_BT1, expected_BSF * mask_BT1, rtol=2e-3, atol=2e-3)
