"""Network Slimming: channel choice, physical removal, equality with masking, L1 hook, course parity,
widths rounded to multiples of ``prune.round_to``.

A pruned net and its masked original (or the course's) compute one function with other conv shapes, so
other kernels: their logits are compared within kernel noise (conftest.KERNEL_TOL), not bit for bit; a
reloaded checkpoint runs the very same shapes and is compared exactly."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from conftest import assert_same_logits
from shrink.checkpoint import model_from_checkpoint, save_checkpoint
from shrink.config import ParamsError, SlimParams, TrainParams, from_dict, load_params
from shrink.criteria import score_groups
from shrink.data import Split
from shrink.models import PRUNABLE_BLOCKS, StudentNet, count_params, student_widths
from shrink.prune import (
    Graph,
    PruneParams,
    RoundParams,
    base_channels_of,
    bn_l1_hook,
    choose,
    keep_as_lists,
    mask_model,
    prunable_groups,
    prune_model,
    rebuild_kwargs,
    round_width,
    slim,
)
from shrink.train import train_one_epoch

# The course's reference implementation (seed 001), copied verbatim, comments translated.
def network_slimming(old_model, new_model):
    params = old_model.state_dict()
    new_params = new_model.state_dict()

    # selected_idx: the neuron indices each layer keeps
    selected_idx = []
    # there are 7 CNN layers, so collect the selected neuron indices one by one
    for i in range(8):
        # per the table, the gamma coefficients are in cnn.{i}.1.weight
        importance = params[f'cnn.{i}.1.weight']
        # how many neurons to keep
        old_dim = len(importance)
        new_dim = len(new_params[f'cnn.{i}.1.weight'])
        # rank the indices, largest first (descending=True)
        ranking = torch.argsort(importance, descending=True)
        # store the choice in selected_idx
        selected_idx.append(ranking[:new_dim])

    now_processed = 1
    for (name, p1), (name2, p2) in zip(params.items(), new_params.items()):
        # cnn layers: transplant the parameters
        # FC layers, or single-number parameters (e.g. batchnorm's tracked count): copy directly
        if name.startswith('cnn') and p1.size() != torch.Size([]) and now_processed != len(selected_idx):
            # on reaching the pointwise weight, now_processed+1: this layer is done
            if name.startswith(f'cnn.{now_processed}.3'):
                now_processed += 1

            # a pointwise weight depends on the previous and the next pruning: special case
            if name.endswith('3.weight'):
                # the last cnn layer's outputs are not pruned
                if len(selected_idx) == now_processed:
                    new_params[name] = p1[:,selected_idx[now_processed-1]]
                # otherwise select by the previous and the next layer's indices
                # note Conv2d(x,y,1).weight is (y,x,1,1): the order is reversed
                else:
                    new_params[name] = p1[selected_idx[now_processed]][:,selected_idx[now_processed-1]]
            else:
                new_params[name] = p1[selected_idx[now_processed]]
        else:
            new_params[name] = p1

    # load the selected parameters into new_model and return it
    new_model.load_state_dict(new_params)
    return new_model


# ---------------------------------------------------------------- helpers

@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # tiny convs: on a loaded 2-core box, intra-op threads contend and run ~30x slower than one
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def by_index(keep: dict) -> dict:
    """StudentNet's groups ``cnn.{j}.3`` keyed by width index ``j`` (the course's view), and back."""
    return {int(n.split(".")[1]): v for n, v in keep.items()}


def by_name(keep: dict) -> dict:
    return {f"cnn.{j}.3": v for j, v in keep.items()}


def scores(model: StudentNet, blocks=PRUNABLE_BLOCKS) -> dict:
    """Each prunable group's importance (the default criterion: mean BN |gamma|), for ``choose``."""
    return score_groups(model, {n: g.tp_group for n, g in Graph(model, blocks).groups.items()}, "bn_scale")


def randomize(model: StudentNet, seed: int, positive_gamma: bool = False) -> StudentNet:
    """Non-trivial BN state everywhere: random gammas (distinct), betas, running stats."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                gamma = torch.rand(n, generator=g) + 0.05
                if not positive_gamma:
                    gamma *= torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
                m.weight.copy_(gamma)
                m.bias.copy_(torch.randn(n, generator=g) * 0.5)
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.num_batches_tracked.fill_(7)
    return model.eval()


def images(n: int = 4, size: int = 28, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


@pytest.fixture(scope="module")
def trained() -> StudentNet:
    """A StudentNet after 30 SGD steps on random 28x28 data: weights and BN stats are not the init."""
    torch.manual_seed(0)
    model = StudentNet(num_classes=10).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    hook = bn_l1_hook(1e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(30):
        x = torch.randn(32, 3, 28, 28, generator=g)
        y = torch.randint(0, 10, (32,), generator=g)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        hook(model)
        opt.step()
    fresh = StudentNet(num_classes=10)
    assert not torch.allclose(model.cnn[4][1].running_mean, fresh.cnn[4][1].running_mean)
    assert not torch.allclose(model.cnn[4][1].weight, fresh.cnn[4][1].weight)
    return model.eval()


# ---------------------------------------------------------------- shapes

def test_cut_changes_exactly_the_coupled_tensors():
    model = randomize(StudentNet(), seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    new, keep = slim(model, 0.5, PruneParams(mode="layer"))
    keep = by_index(keep)

    w = student_widths()
    new_w = list(w)
    for j in PRUNABLE_BLOCKS:
        new_w[j] = w[j] // 2
        assert torch.equal(keep[j], torch.sort(keep[j]).values)  # original order
    assert new.widths == new_w and rebuild_kwargs(new, {}) == {"widths": new_w}  # read from the layers

    coupled = set()
    old_sd, new_sd = model.state_dict(), new.state_dict()
    for j in PRUNABLE_BLOCKS:
        n = new_w[j]
        shapes = {
            f"cnn.{j}.3.weight": (n, w[j - 1], 1, 1) if j - 1 not in PRUNABLE_BLOCKS else (n, new_w[j - 1], 1, 1),
            f"cnn.{j}.3.bias": (n,),
            f"cnn.{j + 1}.0.weight": (n, 1, 3, 3),
            f"cnn.{j + 1}.0.bias": (n,),
            f"cnn.{j + 1}.1.weight": (n,),
            f"cnn.{j + 1}.1.bias": (n,),
            f"cnn.{j + 1}.1.running_mean": (n,),
            f"cnn.{j + 1}.1.running_var": (n,),
        }
        for name, shape in shapes.items():
            assert tuple(new_sd[name].shape) == shape, name
            coupled.add(name)
        consumer = f"cnn.{j + 1}.3.weight"
        assert new_sd[consumer].shape[1] == n
        coupled.add(consumer)
    assert set(new_sd) == set(old_sd)
    for name in set(old_sd) - coupled:  # everything else: same shape and same values
        assert torch.equal(new_sd[name], old_sd[name]), name
    assert new_sd["cnn.5.1.num_batches_tracked"].item() == 7

    assert count_params(new) < count_params(model)
    x = images()
    assert logits(new, x).shape == logits(model, x).shape == (4, 11)
    # pure function: the input model is untouched
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_kept_values_are_the_parents_channels():
    model = randomize(StudentNet(), seed=3)
    new, keep = slim(model, 0.75, PruneParams(mode="layer"))
    keep = by_index(keep)
    j = 4
    idx = keep[j]
    assert torch.equal(new.cnn[j][3].weight, model.cnn[j][3].weight[idx][:, keep[3]])
    assert torch.equal(new.cnn[j + 1][1].running_var, model.cnn[j + 1][1].running_var[idx])
    assert torch.equal(new.cnn[j + 1][0].weight, model.cnn[j + 1][0].weight[idx])


# ---------------------------------------------------------------- pruned = masked (within kernel noise)

@pytest.mark.parametrize("mode", ["layer", "global"])
@pytest.mark.parametrize("width", [0.9, 0.4])
def test_pruned_equals_masked_random(mode, width):
    model = randomize(StudentNet(), seed=1)
    pruned, keep = slim(model, width, PruneParams(mode=mode))
    x = images()
    masked, pruned = logits(mask_model(model, keep), x), logits(pruned, x)
    assert_same_logits(pruned, masked)
    # not vacuous: the cut does change the function of the original net
    assert not torch.allclose(logits(model, x), masked, atol=1e-3)


def test_pruned_equals_masked_other_blocks():
    model = randomize(StudentNet(), seed=2)
    pruned, keep = slim(model, 0.5, PruneParams(blocks=[1, 2, 5], min_channels=4))
    assert sorted(keep) == ["cnn.1.3", "cnn.2.3", "cnn.5.3"]
    assert pruned.widths == [16, 16, 32, 128, 256, 128, 256, 256]
    x = images()
    assert_same_logits(logits(pruned, x), logits(mask_model(model, keep), x))


@pytest.mark.parametrize("mode", ["layer", "global"])
def test_pruned_equals_masked_trained(trained, mode):
    pruned, keep = slim(trained, 0.6, PruneParams(mode=mode))
    masked = mask_model(trained, keep)
    assert pruned.num_classes == 10
    x = images(8)
    assert_same_logits(logits(pruned, x), logits(masked, x))
    # the same in train mode too (batch statistics): the silenced channel is 0 either way
    with torch.no_grad():
        assert_same_logits(pruned.train()(x), masked.train()(x))


def test_a_group_without_batchnorm_is_cut_exactly():
    """The surgery cuts a group that holds no BatchNorm too: StudentNet's cnn.7.3 reaches the classifier through
    the average pool alone (no round selects it: the course's blocks stop at 6). mask_model silences its producer's
    rows, weight and bias, instead of gammas; the cut net computes that, and only the last width shrinks."""
    model = randomize(StudentNet(), seed=5)
    assert "cnn.7.3" in prunable_groups(model, None) and "cnn.7.3" not in prunable_groups(model)
    keep = {"cnn.7.3": torch.arange(0, 256, 3)}
    pruned, masked = prune_model(model, keep), mask_model(model, keep)
    assert pruned.widths == model.widths[:7] + [86] and tuple(pruned.fc[0].weight.shape) == (11, 86)
    dropped = torch.ones(256, dtype=torch.bool)
    dropped[keep["cnn.7.3"]] = False
    assert (masked.cnn[7][3].weight[dropped] == 0).all() and (masked.cnn[7][3].bias[dropped] == 0).all()
    assert (masked.cnn[7][3].weight[~dropped] != 0).any()
    x = images()
    assert_same_logits(logits(pruned, x), logits(masked, x))
    assert not torch.allclose(logits(model, x), logits(masked, x), atol=1e-3)


def test_mask_leaves_input_unchanged():
    model = randomize(StudentNet(), seed=4)
    gamma = model.cnn[5][1].weight.clone()
    masked = mask_model(model, slim(model, 0.5, PruneParams())[1])
    assert torch.equal(model.cnn[5][1].weight, gamma)
    assert (masked.cnn[5][1].weight == 0).sum() == 256 - 128  # width 4: 256 -> 128
    assert (masked.cnn[5][1].bias == 0).sum() == 256 - 128


# ---------------------------------------------------------------- checkpoints

def test_pruned_checkpoint_reloads(tmp_path, trained):
    pruned, keep = slim(trained, 0.7, PruneParams(mode="layer"))
    path = tmp_path / "prune_1.pt"
    save_checkpoint(  # as stages/prune.py does, under the name older checkpoints carry
        path, pruned, name="studentnet", model_kwargs=rebuild_kwargs(pruned, {"widths": trained.widths}), num_classes=10,
        data_meta={"classes": [str(i) for i in range(10)], "mean": [0.5] * 3, "std": [0.25] * 3, "image_size": 28},
        params={"prune": dataclasses.asdict(PruneParams(mode="layer")), "width": 0.7},
        extra={"base_channels": base_channels_of(trained), "kept_channels": keep_as_lists(keep)},
    )
    back = model_from_checkpoint(path)
    assert back.widths == pruned.widths == rebuild_kwargs(back, {})["widths"]
    x = images(6)
    assert torch.equal(logits(back, x), logits(pruned, x))  # same shapes and batch: the same kernels, bit for bit
    # a second round from the reloaded net, sized against the original widths
    ckpt = torch.load(path, weights_only=True)
    _, keep2 = slim(back, 0.49, PruneParams(mode="layer", round_to=1), ckpt["base_channels"])
    assert {n: len(v) for n, v in keep2.items()} == by_name({j: int(trained.widths[j] * 0.49) for j in PRUNABLE_BLOCKS})


# ---------------------------------------------------------------- selection rules

def test_layer_mode_counts_follow_the_course():
    model = StudentNet()
    for w in (0.95, 0.9025, 0.857375, 0.5):
        keep = by_index(slim(model, w, PruneParams(mode="layer", round_to=1))[1])
        assert [len(keep[j]) for j in PRUNABLE_BLOCKS] == [student_widths(width_mult=w)[j] for j in PRUNABLE_BLOCKS]
    # the floor binds only at tiny widths
    keep = slim(model, 0.01, PruneParams(mode="layer", min_channels=8))[1]
    assert len(keep) == 4 and all(len(v) == 8 for v in keep.values())
    assert {n: int(c * 0.95) for n, c in base_channels_of(model).items()} == by_name({3: 121, 4: 243, 5: 243, 6: 243})


def test_global_mode_threshold_and_floor():
    model = randomize(StudentNet(), seed=5)
    with torch.no_grad():
        # layer 3 (BN cnn.4.1) gets the 128 smallest |gamma| of all: with one global threshold it vanishes
        model.cnn[4][1].weight.copy_(torch.linspace(1e-4, 1e-3, 128) * torch.where(torch.arange(128) % 2 == 0, 1, -1))
        for j in (4, 5, 6):
            model.cnn[j + 1][1].weight.copy_(torch.rand(256) + 0.1)
    keep = by_index(slim(model, 0.5, PruneParams(mode="global", min_channels=8, round_to=1))[1])
    budget = sum(int(model.widths[j] * 0.5) for j in PRUNABLE_BLOCKS)
    assert sum(len(v) for v in keep.values()) == budget
    # floor: layer 3 keeps exactly its 8 largest |gamma|
    assert torch.equal(keep[3], torch.sort(torch.argsort(model.cnn[4][1].weight.abs(), descending=True)[:8]).values)
    # the rest is one global threshold: every kept |gamma| >= every dropped |gamma| (in layers 4..6)
    kept, dropped = [], []
    for j in (4, 5, 6):
        g = model.cnn[j + 1][1].weight.abs()
        mask = torch.zeros(256, dtype=torch.bool)
        mask[keep[j]] = True
        kept.append(g[mask])
        dropped.append(g[~mask])
    assert torch.cat(kept).min() >= torch.cat(dropped).max()
    # without the floor (min_channels=1) layer 3 keeps one channel only
    assert len(slim(model, 0.5, PruneParams(mode="global", min_channels=1, round_to=1))[1]["cnn.3.3"]) == 1
    # a floor above a layer's width keeps the whole layer, never more
    keep_all = by_index(choose(scores(model, (3, 4)), by_name({3: 4, 4: 4}), mode="global", min_channels=1000))
    assert len(keep_all[3]) == 128 and len(keep_all[4]) == 256


def test_global_mode_equal_gammas_match_layer_mode_counts():
    model = StudentNet()
    with torch.no_grad():
        for j in PRUNABLE_BLOCKS:
            model.cnn[j + 1][1].weight.fill_(1.0)
    keep = slim(model, 0.5, PruneParams(mode="global", round_to=1))[1]
    assert sum(len(v) for v in keep.values()) == sum(int(model.widths[j] * 0.5) for j in PRUNABLE_BLOCKS)


def test_selection_errors():
    model = StudentNet()
    with pytest.raises(ValueError, match="cannot keep"):
        choose(scores(model), by_name({3: 200}))  # cannot regrow
    for blocks in ((0, 3), (3, 7), (3, 3)):  # the stem and the last width are not cut this way; no repeats
        with pytest.raises(ValueError, match="width indices in 1..6"):
            prunable_groups(model, blocks)
        with pytest.raises(ValueError, match="width indices in 1..6"):
            PruneParams(blocks=list(blocks))
    with pytest.raises(ParamsError, match="prune.mode"):
        from_dict(PruneParams, {"mode": "random"}, "prune")
    with pytest.raises(ValueError, match="distinct indices"):
        prune_model(model, {"cnn.3.3": torch.tensor([1, 1, 2])})
    with pytest.raises(ValueError, match="distinct indices"):
        prune_model(model, {"cnn.3.3": torch.tensor([0, 128])})
    for cut in (prune_model, mask_model):  # the classifier's output is never cut
        with pytest.raises(ValueError, match="not a prunable group"):
            cut(model, {"fc.0": torch.tensor([0])})


def test_params_load_with_from_dict():
    p = from_dict(PruneParams, {"mode": "global", "min_channels": 4, "blocks": [3, 4]}, "prune")
    assert p == PruneParams(mode="global", min_channels=4, blocks=[3, 4])
    assert from_dict(PruneParams, None, "prune") == PruneParams()
    r = from_dict(RoundParams, {"parent": "distill", "width": 0.95}, "prune_1")
    assert (r.parent, r.width, r.epochs) == ("distill", 0.95, 16)  # the shipped rounds' epochs
    assert from_dict(RoundParams, {"parent": "prune_1", "width": 1, "epochs": 2}, "prune_2").width == 1.0
    with pytest.raises(ParamsError, match="prune.minchannels"):
        from_dict(PruneParams, {"minchannels": 4}, "prune")
    with pytest.raises(ParamsError, match="prune.blocks"):
        from_dict(PruneParams, {"blocks": 3}, "prune")
    with pytest.raises(ValueError):
        from_dict(PruneParams, {"mode": "lyer"}, "prune")
    with pytest.raises(ValueError):
        from_dict(RoundParams, {"parent": "distill", "width": 1.5}, "prune_1")


# ---------------------------------------------------------------- L1 hook

def _steps(l1: float, n: int = 5, zero_loss: bool = False) -> StudentNet:
    torch.manual_seed(0)
    model = StudentNet(num_classes=10)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    hook = bn_l1_hook(l1)
    g = torch.Generator().manual_seed(1)
    for _ in range(n):
        x = torch.randn(16, 3, 28, 28, generator=g)
        y = torch.randint(0, 10, (16,), generator=g)
        out = model(x)
        loss = 0.0 * out.sum() if zero_loss else F.cross_entropy(out, y)
        opt.zero_grad()
        loss.backward()
        if hook is not None:
            hook(model)
        opt.step()
    return model


def test_l1_hook_changes_gammas():
    assert bn_l1_hook(0.0) is None
    with pytest.raises(ParamsError, match="slim.l1"):
        from_dict(SlimParams, {"l1": -1.0}, "slim")  # checked once, where params load
    plain, slimmed = _steps(0.0), _steps(1e-2)
    for j in PRUNABLE_BLOCKS:
        assert not torch.allclose(plain.cnn[j + 1][1].weight, slimmed.cnn[j + 1][1].weight)
    # after one step (before the trajectories diverge) only the prunable gammas differ, by lr * l1
    plain, slimmed = _steps(0.0, n=1), _steps(1e-2, n=1)
    assert torch.equal(plain.cnn[2][1].weight, slimmed.cnn[2][1].weight)
    for j in PRUNABLE_BLOCKS:
        torch.testing.assert_close(plain.cnn[j + 1][1].weight - slimmed.cnn[j + 1][1].weight,
                                   0.1 * 1e-2 * torch.sign(plain.cnn[j + 1][1].weight), atol=1e-6, rtol=0)


def test_l1_hook_shrinks_gammas_under_zero_loss():
    init = StudentNet(num_classes=10)  # gammas start at 1
    model = _steps(0.05, n=4, zero_loss=True)  # each step: gamma -= lr * l1 * sign(gamma)
    for j in PRUNABLE_BLOCKS:
        g = model.cnn[j + 1][1].weight
        assert torch.all(g.abs() < init.cnn[j + 1][1].weight.abs())
        torch.testing.assert_close(g, torch.full_like(g, 1.0 - 4 * 0.1 * 0.05))
    assert torch.equal(model.cnn[1][1].weight, init.cnn[1][1].weight)


def test_l1_hook_in_the_training_loop():
    data = Split(images=torch.randint(0, 256, (64, 3, 28, 28), dtype=torch.uint8), labels=torch.randint(0, 10, (64,)))
    cfg = TrainParams(batch_size=16, optimizer="sgd", lr=0.05)

    def run(l1: float) -> torch.Tensor:
        torch.manual_seed(0)
        model = StudentNet(num_classes=10)
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr)
        train_one_epoch(
            model, data, lambda x: x.float() / 255 - 0.5, opt, cfg, torch.Generator().manual_seed(0),
            loss_fn=lambda logits, y, _x: F.cross_entropy(logits, y), after_backward=bn_l1_hook(l1),
        )
        return model.cnn[5][1].weight.detach().clone()

    a, b = run(0.0), run(0.1)
    assert (b.abs() < a.abs()).float().mean() > 0.9


# ---------------------------------------------------------------- parity with the course

@pytest.mark.parametrize("width", [0.95, 0.5])
def test_layer_mode_matches_course_network_slimming(width):
    old = randomize(StudentNet(), seed=6, positive_gamma=True)  # the course sorts raw gamma
    course = network_slimming(old, StudentNet(width_mult=width)).eval()
    ours, keep = slim(old, width, PruneParams(mode="layer", round_to=1))
    keep = by_index(keep)
    assert ours.widths == course.widths == student_widths(width_mult=width)
    for j in PRUNABLE_BLOCKS:
        # gammas are distinct, so the set of kept gamma values identifies the set of kept channels
        course_set = set(course.cnn[j + 1][1].weight.tolist())
        ours_set = set(old.cnn[j + 1][1].weight[keep[j]].tolist())
        assert course_set == ours_set
    x = images(4)
    assert_same_logits(logits(ours, x), logits(course, x))


def test_rounds_match_the_course_loop():
    """The course's loop: width_mult *= 0.95 each round, always relative to the original widths."""
    net = randomize(StudentNet(), seed=7, positive_gamma=True)
    base = net.widths
    ours = net
    course = net
    width = 1.0
    x = images(4)
    for _ in range(3):
        width *= 0.95
        course = network_slimming(course, StudentNet(width_mult=width)).eval()
        ours, _ = slim(ours, width, PruneParams(mode="layer", round_to=1), base_channels_of(net))
        assert ours.widths == course.widths
        assert_same_logits(logits(ours, x), logits(course, x))


# ---------------------------------------------------------------- aligned widths (prune.round_to)

COURSE_SCHEDULE = [0.95 ** n for n in range(1, 6)]  # the default rounds' cumulative widths


def test_round_width_rule():
    # nearest multiple, halves up
    assert [round_width(n, 256, 8) for n in (243, 231, 219, 208, 198, 100, 99)] == [240, 232, 216, 208, 200, 104, 96]
    # never above the current width: the largest multiple it still has
    assert round_width(123, 121, 8) == 120
    assert round_width(130, 128, 8) == 128
    # never below round_to, nor below the floor (rounded up to a multiple)
    assert round_width(1, 256, 8) == 8
    assert round_width(3, 256, 16) == 16
    assert round_width(10, 256, 8, floor=10) == 16
    # no multiple in [floor, current]: the layer keeps what it has
    assert round_width(2, 6, 8) == 6
    assert round_width(20, 20, 8, floor=18) == 20
    # round_to 1: the count, clipped to [floor, current]
    assert [round_width(n, 200, 1, floor=8) for n in (3, 99, 198, 250)] == [8, 99, 198, 200]
    with pytest.raises(ValueError, match="prune.round_to"):
        round_width(10, 20, 0)


@pytest.mark.parametrize("mode", ["layer", "global"])
@pytest.mark.parametrize("round_to", [8, 16])
def test_rounded_rounds_stay_aligned_bounded_and_exact(mode, round_to):
    """Five x0.95 rounds, as the default params: every round's widths are multiples of round_to, no wider than
    the parent, no narrower than round_to; each cut computes what the masked parent computes."""
    model = randomize(StudentNet(), seed=8)
    base, base_ch = model.widths, base_channels_of(model)
    cfg = PruneParams(mode=mode, round_to=round_to)
    x = images(4)
    seen = []
    for width in COURSE_SCHEDULE:
        pruned, by_group = slim(model, width, cfg, base_ch)
        keep = by_index(by_group)
        assert sorted(keep) == list(PRUNABLE_BLOCKS)
        for j in PRUNABLE_BLOCKS:
            n = pruned.widths[j]
            assert n % round_to == 0 and round_to <= n <= model.widths[j], (width, j, n, model.widths[j])
            # whatever the count, a layer keeps its largest |gamma|
            gamma = model.cnn[j + 1][1].weight.abs()
            top = torch.sort(torch.argsort(gamma, descending=True, stable=True)[:n]).values
            assert torch.equal(keep[j], top)
        assert [pruned.widths[j] for j in range(8) if j not in PRUNABLE_BLOCKS] == [
            base[j] for j in range(8) if j not in PRUNABLE_BLOCKS]
        assert_same_logits(logits(pruned, x), logits(mask_model(model, by_group), x))
        seen.append([pruned.widths[j] for j in PRUNABLE_BLOCKS])
        model = pruned
    # the rounds do shrink the net overall, and stay near the course's exact schedule
    assert sum(seen[-1]) < sum(seen[0]) < sum(base[j] for j in PRUNABLE_BLOCKS)
    if mode == "layer":
        for w, got in zip(COURSE_SCHEDULE, seen):
            exact = [int(base[j] * w) for j in PRUNABLE_BLOCKS]
            assert all(abs(g - e) <= round_to // 2 for g, e in zip(got, exact)), (w, got, exact)


def test_the_documented_course_schedule_is_the_one_these_parity_tests_use():
    """docs/prune-schedule.md's params block is the course's schedule: the widths COURSE_SCHEDULE (checked
    against the course's own code above), a chain from distill, exact widths; and params.yaml accepts it."""
    import yaml

    from shrink.config import validate

    root = Path(__file__).resolve().parents[1]
    block = (root / "docs/prune-schedule.md").read_text().split("```yaml\n# the course's schedule\n")[1].split("```")[0]
    prune = yaml.safe_load(block)["prune"]
    rounds = prune["rounds"]
    assert [r["width"] for r in rounds.values()] == pytest.approx(COURSE_SCHEDULE, rel=1e-12)
    assert [r["parent"] for r in rounds.values()] == ["distill", *list(rounds)[:-1]]
    assert prune["round_to"] == 1 and prune["mode"] == "layer" and all(r["epochs"] == 1 for r in rounds.values())
    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw["prune"].update(prune)
    assert validate(raw).prune.rounds["prune_5"].width == pytest.approx(0.95 ** 5)


def test_default_rounds_widths():
    """The documented sequence at the defaults (round_to 8, layer mode): nearest multiples of the course's widths."""
    model = StudentNet()
    base = base_channels_of(model)
    got = []
    for width in COURSE_SCHEDULE:
        model, _ = slim(model, width, PruneParams(mode="layer"), base)
        got.append((model.widths[3], model.widths[4]))
        assert model.widths[4] == model.widths[5] == model.widths[6]
    assert got == [(120, 240), (112, 232), (112, 216), (104, 208), (96, 200)]


def test_round_to_one_is_the_exact_schedule():
    """round_to 1 keeps the course's int(base * width) in every round."""
    model = randomize(StudentNet(), seed=9, positive_gamma=True)
    base = base_channels_of(model)
    for width in COURSE_SCHEDULE:
        model, _ = slim(model, width, PruneParams(mode="layer", round_to=1), base)
        assert model.widths == student_widths(width_mult=width)
    assert [model.widths[j] for j in PRUNABLE_BLOCKS] == [99, 198, 198, 198]


def test_rounding_parent_edges():
    model = StudentNet()
    base = model.widths
    # a parent cut exactly (121 channels), then rounded: the nearest multiple that it has
    exact, _ = slim(model, 0.95, PruneParams(mode="layer", round_to=1))
    assert exact.widths[3] == 121
    keep = by_index(choose(scores(exact, (3, 4)), by_name({3: 121, 4: 243}), round_to=8))
    assert (len(keep[3]), len(keep[4])) == (120, 240)
    # a target just above a rounded parent (within round_to - 1) is the parent's rounding, not an error
    rounded, _ = slim(model, 0.95, PruneParams(mode="layer"), base_channels_of(model))
    assert rounded.widths[3] == 120
    assert len(choose(scores(rounded, (3,)), {"cnn.3.3": 123}, round_to=8)["cnn.3.3"]) == 120
    with pytest.raises(ValueError, match="cannot keep"):
        choose(scores(rounded, (3,)), {"cnn.3.3": 128}, round_to=8)
    with pytest.raises(ValueError, match="cannot keep"):
        choose(scores(rounded, (3,)), {"cnn.3.3": 121}, round_to=1)
    # tiny widths: never below round_to; a layer already narrower than round_to keeps its width
    keep = slim(model, 0.01, PruneParams(mode="layer", min_channels=1, round_to=16))[1]
    assert len(keep) == 4 and all(len(v) == 16 for v in keep.values())
    keep = by_index(slim(model, 0.5, PruneParams(mode="layer", blocks=[1, 2], min_channels=1, round_to=64))[1])
    assert (len(keep[1]), len(keep[2])) == (32, 64)  # widths 32 and 64: nothing to cut at 64


def test_round_to_params():
    assert PruneParams().round_to == 8
    assert from_dict(PruneParams, {"round_to": 16}, "prune").round_to == 16
    repo = load_params(Path(__file__).resolve().parents[1] / "params.yaml").prune
    assert (repo.mode, repo.min_channels, repo.blocks) == ("global", 8, list(PRUNABLE_BLOCKS))
    for bad in (0, -8):
        with pytest.raises(ValueError, match="prune.round_to"):
            from_dict(PruneParams, {"round_to": bad}, "prune")
    for bad in ("8", 8.0, True):
        with pytest.raises(ParamsError, match="prune.round_to"):
            from_dict(PruneParams, {"round_to": bad}, "prune")
    with pytest.raises(ValueError, match="must be >= 1"):
        PruneParams(round_to=0)  # built directly, too
