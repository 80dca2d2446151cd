"""Tests over the pruning-criteria registry (``prune.criterion``), as for models: every entry scores every channel of
every prunable group, prunes exactly, keeps the same channels on a rerun, reads data or a seed only if it says so;
``bn_scale`` is the course's |gamma|; a new criterion is one entry that params accept."""
from __future__ import annotations

import functools

import pytest
import torch
import torch_pruning as tp

from shrink import criteria
from shrink.config import ParamsError, validate
from shrink.criteria import get_criterion, list_criteria, register_criterion, score_groups
from shrink.models import count_params
from shrink.prune import Graph, PruneParams, mask_model, sample_images, slim
from test_prune import one_thread  # noqa: F401 (autouse: tiny convs run faster on one thread)
from test_registry import CLASSES, SIZE, images, logits, make

ARCHS = ["studentnet", "mobilenet_v3_small"]  # the course's groups; a torchvision student (SE, hardswish, residuals)


def sample_of(seed: int, n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, SIZE, SIZE, generator=g), torch.randint(0, len(CLASSES), (n,), generator=g)


SAMPLE = sample_of(0)


@functools.lru_cache(maxsize=None)
def net(arch: str) -> torch.nn.Module:
    """One student per arch for the whole file; the tests check that scoring leaves it as it was."""
    return make(arch)


def readable(graph: Graph, criterion: str) -> dict[str, tp.dependency.Group]:
    """The groups ``criterion`` can rank: every one, or with a criterion that reads BatchNorms only (bn_scale) those
    that hold one (the others are ``prune.bnless_criterion``'s)."""
    return {n: g.tp_group for n, g in graph.groups.items() if g.bns or not get_criterion(criterion).bn_only}


def scores(model: torch.nn.Module, criterion: str, **kw) -> dict[str, torch.Tensor]:
    return score_groups(model, readable(Graph(model), criterion), criterion, **kw)


@functools.lru_cache(maxsize=None)
def cut(arch: str, criterion: str, seed: int = 0):
    """A global-mode cut to half width (global: the scores of every group are ranked together)."""
    return slim(net(arch), 0.5, PruneParams(criterion=criterion, mode="global"), sample=SAMPLE, seed=seed)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("criterion", list_criteria())
def test_every_criterion_scores_every_channel_and_leaves_the_net_as_it_was(criterion, arch):
    model = net(arch)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    graph = Graph(model)
    got = scores(model, criterion, sample=SAMPLE)
    assert list(got) == list(readable(graph, criterion))
    bnless = [n for n, g in graph.groups.items() if not g.bns]
    assert bool(bnless) == (arch == "mobilenet_v3_small")  # its hidden Linear and squeeze-excitations
    if bnless and get_criterion(criterion).bn_only:  # nothing to read there: slim ranks them by prune.bnless_criterion
        with pytest.raises(ValueError, match=f"'{criterion}' cannot score group {bnless[0]}"):
            score_groups(model, {bnless[0]: graph.groups[bnless[0]].tp_group}, criterion)
    for name, s in got.items():
        g = graph.groups[name]
        assert s.shape == (g.channels,) and s.dtype == torch.float32 and torch.isfinite(s).all(), name
        assert len(s.unique()) > 1, f"{criterion} does not rank the channels of {name}"
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # BN statistics did not move
    assert not model.training and all(p.grad is None and p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("criterion", list_criteria())
def test_every_criterion_prunes_exactly_and_a_rerun_keeps_the_same_channels(criterion, arch):
    model = net(arch)
    pruned, keep = cut(arch, criterion)
    x = images()
    torch.testing.assert_close(logits(pruned, x), logits(mask_model(model, keep), x), atol=2e-5, rtol=1e-4)
    assert count_params(pruned) < 0.8 * count_params(model)
    again = slim(model, 0.5, PruneParams(criterion=criterion, mode="global"), sample=SAMPLE, seed=0)[1]
    assert {n: v.tolist() for n, v in again.items()} == {n: v.tolist() for n, v in keep.items()}


@pytest.mark.parametrize("criterion", list_criteria())
def test_only_a_seeded_criterion_moves_with_the_seed_and_none_draws_from_the_global_stream(criterion):
    model = net("studentnet")
    state = torch.get_rng_state()
    a, b = (scores(model, criterion, sample=SAMPLE, seed=s) for s in (0, 1))
    assert torch.equal(torch.get_rng_state(), state)
    assert any(not torch.equal(a[n], b[n]) for n in a) == get_criterion(criterion).seeded
    if get_criterion(criterion).seeded:  # and the channels it keeps move too
        k0, k1 = cut("studentnet", criterion, 0)[1], cut("studentnet", criterion, 1)[1]
        assert any(not torch.equal(k0[n], k1[n]) for n in k0)


@pytest.mark.parametrize("criterion", list_criteria())
def test_a_criterion_reads_training_images_only_if_it_says_so(criterion):
    model = net("studentnet")
    if get_criterion(criterion).sample_images:
        with pytest.raises(ValueError, match=f"'{criterion}' reads gradients: pass a sample"):
            scores(model, criterion)
        a, b = scores(model, criterion, sample=SAMPLE), scores(model, criterion, sample=sample_of(1))
        assert any(not torch.equal(a[n], b[n]) for n in a)
    else:
        a, b = scores(model, criterion), scores(model, criterion, sample=SAMPLE)
        assert all(torch.equal(a[n], b[n]) for n in a)


def test_a_round_draws_training_images_for_the_criteria_it_uses():
    """prune.bnless_criterion ranks something only under a criterion that reads BatchNorms only."""
    taylor = get_criterion("taylor").sample_images
    assert taylor > 0 and sample_images(PruneParams()) == 0
    assert sample_images(PruneParams(bnless_criterion="taylor")) == taylor
    assert sample_images(PruneParams(criterion="l1", bnless_criterion="taylor")) == 0
    assert sample_images(PruneParams(criterion="taylor")) == taylor


@pytest.mark.parametrize("criterion", [c for c in list_criteria() if not get_criterion(c).seeded])
def test_a_channel_whose_coupled_weights_are_all_zero_ranks_last(criterion):
    """What every measuring criterion agrees on (the seeded one measures nothing: it is the floor). The channel's
    places are the course's table: pointwise row, depthwise filter, BatchNorm entry, next pointwise's column.
    (taylor scores 0 for every channel the sample never activates as well: no gradient reaches it.)"""
    model, j, c = make("studentnet"), 4, 5
    with torch.no_grad():
        for t in (model.cnn[j][3].weight, model.cnn[j][3].bias, model.cnn[j + 1][0].weight, model.cnn[j + 1][0].bias,
                  model.cnn[j + 1][1].weight, model.cnn[j + 1][1].bias):
            t[c] = 0
        model.cnn[j + 1][3].weight[:, c] = 0
    s = scores(model, criterion, sample=SAMPLE)[f"cnn.{j}.3"]
    assert s[c] == s.min() == 0 and (s > 0).sum() > len(s) // 4, s


@pytest.mark.parametrize("arch", ARCHS)
def test_bn_scale_is_the_mean_abs_gamma_of_the_groups_batchnorms(arch):
    """Bit for bit the criterion the pipeline always used (its kept channels follow: ``choose`` is unchanged, and
    test_prune's course-parity tests run ``slim`` with the default criterion)."""
    model = net(arch)
    graph = Graph(model)
    got = scores(model, "bn_scale")
    assert list(got) == [n for n, g in graph.groups.items() if g.bns]
    for name, g in graph.groups.items():
        if not g.bns:
            continue
        direct = torch.zeros(g.channels)
        for bn, perm in g.bns:  # perm: the group channel of each BN channel
            direct[perm] += bn.weight.detach().abs()
        assert torch.equal(got[name], direct / len(g.bns)), name
    if arch == "studentnet":  # the course's table: the importance of width j is |gamma| of cnn.{j+1}.1
        for j in (3, 4, 5, 6):
            assert torch.equal(got[f"cnn.{j}.3"], model.cnn[j + 1][1].weight.detach().abs())
    assert PruneParams().criterion == "bn_scale" == list_criteria()[0]


def test_a_new_criterion_is_one_entry(monkeypatch):
    """Registered once (here Torch-Pruning's FPGM), it is a valid ``prune.criterion`` and it scores and prunes;
    unknown names fail naming the known ones."""
    monkeypatch.setattr(criteria, "_CRITERIA", dict(criteria._CRITERIA))  # the registry as it was, after the test
    with pytest.raises(ParamsError, match="params.yaml: prune.criterion: must be one of bn_scale, .*, got 'fpgm'"):
        validate({"prune": {"criterion": "fpgm"}})
    register_criterion("fpgm", lambda: tp.importance.FPGMImportance(), "distance to the filters' geometric median")
    assert validate({"prune": {"criterion": "fpgm"}}).prune.criterion == "fpgm"
    model = net("studentnet")
    pruned, keep = slim(model, 0.5, PruneParams(criterion="fpgm"))
    default = slim(model, 0.5, PruneParams())[1]
    assert any(not torch.equal(k, default[n]) for n, k in keep.items())  # its own choice, not bn_scale's
    x = images()
    torch.testing.assert_close(logits(pruned, x), logits(mask_model(model, keep), x), atol=2e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="registered already"):
        register_criterion("fpgm", lambda: tp.importance.RandomImportance(), "again")
    with pytest.raises(ValueError, match="unknown pruning criterion 'nope' \\(known: bn_scale, l1, "):
        get_criterion("nope")
