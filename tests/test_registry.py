"""Tests over the model registry (timm-style): every supported arch trains, prunes exactly, saves, loads and exports.

Every student the registry lists explicitly, and a representative handful of torchvision's (registered generically).
Small on purpose (28 px, 3 classes, a handful of images) so the whole file runs in a few minutes on 2 cores.
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from shrink.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from shrink.config import ParamsError, validate
from shrink.formats import get_format, list_formats
from shrink.criteria import get_criterion, list_criteria, score_groups
from shrink.models import (
    build_model, check_arch, count_params, get_entry, list_models, structure_of, student_kwargs, teacher_kwargs,
    torchvision_archs,
)
from shrink.prune import (
    Graph, PruneParams, base_channels_of, bn_l1_hook, keep_as_lists, mask_model, prunable_bns, prunable_groups,
    prune_model, rebuild_kwargs, round_width, slim,
)
from shrink.runtime import load_runtime
from conftest import assert_same_logits
from test_models import available  # skip, with the reason, an entry whose optional package is missing

OWN = [n for n in list_models() if n not in torchvision_archs()]  # the entries the registry lists explicitly
ARCHS = [n for n in OWN if "student" not in get_entry(n).refuse] + [
    "mobilenet_v2", "mobilenet_v3_small", "resnet18", "efficientnet_b0"]
TEACHERS = [n for n in OWN if "teacher" not in get_entry(n).refuse]  # the teacher-only extra: builds, saves, loads
CLASSES = ["a", "b", "c"]
SIZE = 28


def make(arch: str, num_classes: int = len(CLASSES)) -> nn.Module:
    """A student as the stages build it, with BN statistics and gammas that are not the init's."""
    torch.manual_seed(0)
    model = build_model(arch, num_classes, **student_kwargs(arch, 16, 1.0, small_input=True))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=g) + 0.05)
                m.bias.copy_(torch.randn(n, generator=g) * 0.3)
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
    return model.eval()


def images(n: int = 3) -> torch.Tensor:
    return torch.randn(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))


def logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


def ckpt_of(model: nn.Module, arch: str, kwargs: dict, classes: list[str] = CLASSES) -> dict:
    return {"model": arch, "model_kwargs": kwargs, "num_classes": len(classes),
            "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()}, "params": {},
            "data": {"classes": classes, "mean": [0.5] * 3, "std": [0.25] * 3, "image_size": SIZE}}


@pytest.fixture(scope="module", params=ARCHS)
def cut(request):
    """(arch, unpruned, pruned, keep, kwargs of the pruned) for one arch: one 0.5-width layer-mode round."""
    arch = request.param
    model = make(arch)
    pruned, keep = slim(model, 0.5, PruneParams(mode="layer", round_to=8))
    kwargs = rebuild_kwargs(pruned, student_kwargs(arch, 16, 1.0, small_input=True))
    return arch, model, pruned, keep, kwargs


@pytest.mark.parametrize("arch", ["studentnet", "mobilenet_v3_small"])  # the course's groups; SE + hardswish
def test_sync_batchnorm_gives_the_same_groups_and_l1_targets(arch):
    """DDP on CUDA converts every BatchNorm to SyncBatchNorm (a ``_BatchNorm``, not a ``BatchNorm2d``): the converted
    net must yield the same slimming groups, the same L1 targets and the same cut. Tracing runs in eval mode, where
    SyncBatchNorm needs no process group, so this runs on the CPU."""
    model = make(arch)
    sync = nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(model))
    assert any(isinstance(m, nn.SyncBatchNorm) for m in sync.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in sync.modules())
    assert structure_of(sync) == structure_of(model)
    groups, sync_groups = Graph(model).groups, Graph(sync).groups
    assert {n: g.channels for n, g in sync_groups.items()} == {n: g.channels for n, g in groups.items()}
    for criterion in list_criteria():  # every criterion reads a SyncBatchNorm as it reads a BatchNorm
        sample = (images(4), torch.arange(4) % len(CLASSES))
        scores, sync_scores = (score_groups(net, {n: g.tp_group for n, g in gs.items()
                                                  if g.bns or not get_criterion(criterion).bn_only},
                                            criterion, sample=sample)
                               for net, gs in ((model, groups), (sync, sync_groups)))
        assert list(scores) == list(sync_scores)
        for name in scores:
            torch.testing.assert_close(sync_scores[name], scores[name], rtol=0, atol=0, msg=f"{criterion} {name}")

    def l1_targets(net: nn.Module) -> list[str]:
        bns = {id(b) for b in prunable_bns(net)}
        return [n for n, m in net.named_modules() if id(m) in bns]

    targets = l1_targets(sync)
    assert targets and targets == l1_targets(model)
    # the hook adds l1 * sign(gamma) to exactly those SyncBatchNorm gammas
    for p in sync.parameters():
        p.grad = torch.zeros_like(p)
    bn_l1_hook(0.5)(sync)
    moved = [n for n, m in sync.named_modules() if isinstance(m, nn.SyncBatchNorm) and m.weight.grad.abs().sum() > 0]
    assert moved == targets
    # and the cut keeps the same channels
    keep, keep_sync = slim(model, 0.5, PruneParams())[1], slim(sync, 0.5, PruneParams())[1]
    assert {n: v.tolist() for n, v in keep.items()} == {n: v.tolist() for n, v in keep_sync.items()}


@pytest.mark.parametrize("arch", TEACHERS)
def test_teacher_entry_builds_saves_and_loads(arch, tmp_path):
    """A teacher-only entry: built as the teacher stage builds it (its own input size and normalisation), one
    backward pass, then a weights-only checkpoint that rebuilds it with the same logits."""
    available(arch)
    kwargs = teacher_kwargs(arch, False, None, "auto", True, SIZE, [0.5] * 3, [0.25] * 3)
    torch.manual_seed(0)
    model = build_model(arch, len(CLASSES), **kwargs)
    out = model.train()(images(4))
    assert out.shape == (4, len(CLASSES))
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    path = tmp_path / "teacher.pt"
    save_checkpoint(path, model, name=arch, model_kwargs=kwargs, num_classes=len(CLASSES),
                    data_meta=ckpt_of(model, arch, kwargs)["data"], params={})
    back = model_from_checkpoint(load_checkpoint(path))
    x = images()
    assert torch.equal(logits(back, x), logits(model, x))  # same net, shapes and batch: bit for bit


def test_training_step_with_l1(cut):
    """One SGD step at 28 px: finite loss, every parameter gets a gradient, slim.l1 moves the prunable gammas."""
    arch, model, *_ = cut
    model = make(arch).train()
    x, y = images(4), torch.tensor([0, 1, 2, 0])
    out = model(x)
    assert out.shape == (4, len(CLASSES))
    loss = F.cross_entropy(out, y)
    assert torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    bns = prunable_bns(model)
    assert bns and all(isinstance(b, nn.BatchNorm2d) for b in bns)
    before = {id(b): b.weight.grad.clone() for b in bns}
    bn_l1_hook(0.5)(model)
    for b in bns:
        torch.testing.assert_close(b.weight.grad - before[id(b)], 0.5 * torch.sign(b.weight.detach()))
    torch.optim.SGD(model.parameters(), lr=0.01).step()


def test_pruning_is_exact_and_smaller(cut):
    """The pruned net computes what the original computes with the dropped channels' gamma and beta zeroed
    (eval mode), every prunable group shrinks to about half, and the parameter count drops."""
    arch, model, pruned, keep, _ = cut
    groups = prunable_groups(model)
    if arch == "studentnet":  # the course's blocks 3..6 only
        assert list(groups) == [f"cnn.{j}.3" for j in (3, 4, 5, 6)]
    else:  # every group (with a BN or without), never the classifier's output
        assert len(groups) >= 8
    assert set(keep) == set(groups)
    after = prunable_groups(pruned)
    assert set(after) == set(groups)  # names are stable across rounds
    for name, n in groups.items():
        assert after[name] == len(keep[name]) <= n
        if n >= 16:
            assert after[name] < n and after[name] % 8 == 0, (name, n, after[name])
    assert count_params(pruned) < 0.75 * count_params(model)
    x = images()
    ref = logits(mask_model(model, keep), x)
    assert_same_logits(logits(pruned, x), ref)  # other conv shapes, other kernels: within their noise
    assert not torch.allclose(logits(model, x), ref, atol=1e-3)  # not vacuous: the cut changes the function
    assert logits(pruned, x).shape == (3, len(CLASSES))


# two archs suffice for the round logic (it is arch-independent): the course's groups and a torchvision net's
@pytest.mark.parametrize("cut", ["studentnet", "mobilenet_v3_small"], indirect=True)
def test_second_round_against_the_original_widths(cut):
    """Round 2 sizes its groups against the unpruned net's channels, so it cuts further and stays exact."""
    arch, model, pruned, _, _ = cut
    base = base_channels_of(model)
    again, keep2 = slim(pruned, 0.3, PruneParams(mode="layer", round_to=1, min_channels=1), base)
    for name, idx in keep2.items():
        assert len(idx) == max(1, int(base[name] * 0.3)) or len(idx) == prunable_groups(pruned)[name]
    assert count_params(again) < count_params(pruned)
    x = images()
    assert_same_logits(logits(again, x), logits(mask_model(pruned, keep2), x))


def test_checkpoint_round_trip_weights_only(cut, tmp_path):
    """A pruned checkpoint is plain data (weights_only=True loads it); loading rebuilds the arch, applies the
    stored structure and loads the weights strictly: same logits."""
    arch, _, pruned, _, kwargs = cut
    path = tmp_path / "prune_1.pt"
    save_checkpoint(path, pruned, name=arch, model_kwargs=kwargs, num_classes=len(CLASSES),
                    data_meta=ckpt_of(pruned, arch, kwargs)["data"], params={})
    raw = torch.load(path, weights_only=True)
    assert raw["model"] == arch
    if arch == "studentnet":  # the course's state_dict format: widths, no structure
        assert set(raw["model_kwargs"]) == {"widths"} and list(raw["state_dict"])[0] == "cnn.0.0.weight"
    else:
        assert all(isinstance(v, list) for v in raw["model_kwargs"]["structure"].values())
    back = model_from_checkpoint(load_checkpoint(path))
    x = images()
    assert torch.equal(logits(back, x), logits(pruned, x))  # same net, shapes and batch: bit for bit


def test_export_and_load_every_artifact(cut, tmp_path):
    """Every registered format's artifact of a pruned net loads through the one loader and agrees with fp32."""
    arch, _, pruned, _, kwargs = cut
    ckpt = ckpt_of(pruned, arch, kwargs)
    x = images(32)
    ref = logits(pruned, x)
    calib = torch.randn(16, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    # relative logit error allowed per kind: measured at most 0.0011 (fp16) and 0.052 (uint8 of mobilenet_v2;
    # the 8-bit kinds 0.004-0.052) over the archs here, with every argmax agreeing; a wrong scale or a swapped
    # channel gives errors of order 1. A new format gets the 8-bit kinds' bound unless it says otherwise here.
    tolerance = {"fp16": 0.01}
    for kind in list_formats():
        fmt = get_format(kind)
        path = tmp_path / f"m.{fmt.suffix}"
        fmt.save(ckpt, calib, path)
        rt = load_runtime(path)
        assert rt.kind == kind
        out = rt(x)
        assert out.shape == ref.shape
        assert ((out - ref).norm() / ref.norm()).item() <= tolerance.get(kind, 0.1), kind
        assert (out.argmax(1) == ref.argmax(1)).float().mean() >= 0.9, kind


def test_a_torchvision_student_cuts_its_layers_without_batchnorm(tmp_path):
    """mobilenet_v3_small (10 classes, small input) cut to width 0.3 with the default params (bn_scale, global). Its
    hidden Linear(576, 1024) and its squeeze-excitations' reduced channels hold no BatchNorm: prune.bnless_criterion
    ranks them and each keeps the round's width, rounded as prune.round_to says. The BN groups keep what BN-only
    pruning keeps (the global budget is theirs alone), so the net is smaller than BN-only pruning's by at least the
    head's cut rows and columns; it computes its masked original, its checkpoint rebuilds from plain data (with the
    kept channels) and its int8w ONNX file runs, smaller than BN-only pruning's."""
    arch, classes, cfg, x = "mobilenet_v3_small", [str(i) for i in range(10)], PruneParams(), images()
    model = make(arch, len(classes))
    pruned, keep = slim(model, 0.3, cfg)
    graph = Graph(model)
    bnless = [n for n, g in graph.groups.items() if not g.bns]
    assert "classifier.0" in bnless and any(n.endswith(".fc1") for n in bnless) and set(keep) == set(graph.groups)
    for n in bnless:  # per layer, whatever the gammas say
        base, floor = graph.groups[n].channels, min(cfg.min_channels, graph.groups[n].channels)
        assert len(keep[n]) == round_width(max(int(base * 0.3), floor), base, cfg.round_to, floor), n
    head = pruned.classifier[0]
    assert head.out_features == len(keep["classifier.0"]) == 304  # int(0.3 * 1024) = 307, nearest multiple of 8
    assert pruned.classifier[3].in_features == 304 and pruned.classifier[3].out_features == 10
    bn_only = prune_model(model, {n: k for n, k in keep.items() if n not in bnless})
    assert bn_only.classifier[0].in_features == head.in_features and bn_only.classifier[0].out_features == 1024
    head_cut = (1024 - 304) * (head.in_features + 1 + 10)  # classifier.0's rows and biases, classifier.3's columns
    assert count_params(bn_only) - count_params(pruned) >= head_cut
    assert count_params(pruned) < 0.5 * count_params(bn_only)
    assert logits(pruned, x).shape == (len(x), 10)
    assert_same_logits(logits(pruned, x), logits(mask_model(model, keep), x))

    kwargs = rebuild_kwargs(pruned, student_kwargs(arch, 16, 1.0, small_input=True))
    path = tmp_path / "prune.pt"
    save_checkpoint(path, pruned, name=arch, model_kwargs=kwargs, num_classes=10, params={},
                    data_meta=ckpt_of(pruned, arch, kwargs, classes)["data"],
                    extra={"base_channels": base_channels_of(model), "kept_channels": keep_as_lists(keep)})
    ckpt = load_checkpoint(path)
    assert ckpt["model_kwargs"]["structure"]["classifier.0"] == [head.in_features, 304]
    assert ckpt["kept_channels"]["classifier.0"] == keep["classifier.0"].tolist()
    assert torch.equal(logits(model_from_checkpoint(ckpt), x), logits(pruned, x))
    fmt, calib = get_format("int8w"), torch.randn(8, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    size = fmt.save(ckpt, calib, tmp_path / f"prune.{fmt.suffix}")
    out, ref = load_runtime(tmp_path / f"prune.{fmt.suffix}")(x), logits(pruned, x)
    assert ((out - ref).norm() / ref.norm()).item() <= 0.1 and torch.equal(out.argmax(1), ref.argmax(1))
    bn_only_kwargs = rebuild_kwargs(bn_only, student_kwargs(arch, 16, 1.0, small_input=True))
    assert size < 0.5 * fmt.save(ckpt_of(bn_only, arch, bn_only_kwargs, classes), calib, tmp_path / "bn_only.onnx")


def test_fine_tunes_let_batchnorm_statistics_follow_the_cut(tiny_run, tmp_path, monkeypatch):
    """torchvision's MobileNetV3 builds its BatchNorms with momentum 0.01: after a cut, the screen's one epoch ended
    with the uncut net's statistics (a cut to 0.18 read 0.11 on validation, 0.67 with 0.1). ``run_round`` (rounds,
    screen and control alike) fine-tunes with at least PyTorch's 0.1; StudentNet's (0.1) and a cumulative average
    (None) stay as built."""
    import shrink.rounds as rounds
    from shrink.config import CONTROL, ControlParams, PruneParams, RoundParams, SlimParams
    from shrink.data import load_meta
    from torch.nn.modules.batchnorm import _BatchNorm

    def momenta(model):
        return {m.momentum for m in model.modules() if isinstance(m, _BatchNorm)}

    data = tiny_run / "data" / "prepared"
    classes = load_meta(data)["classes"]
    arch = "mobilenet_v3_small"
    model = make(arch, len(classes))
    assert momenta(model) == {0.01}  # as torchvision builds it: what the fix is for
    kwargs = student_kwargs(arch, 16, 1.0, small_input=True)
    parent = tmp_path / "parent.pt"
    save_checkpoint(parent, model, name=arch, model_kwargs=kwargs, num_classes=len(classes), params={},
                    data_meta=ckpt_of(model, arch, kwargs, classes)["data"])
    seen = []
    monkeypatch.setattr(rounds, "run_training", lambda job, *a, **k: seen.append(momenta(job.model)) or {})
    cfg = PruneParams(rounds={"r": RoundParams(parent="distill", width=0.5, epochs=1)},
                      control=ControlParams("distill", 1))
    for name in ("r", CONTROL):
        rounds.run_round(parent, cfg, name, slim_params=SlimParams(), seed=0, data_dir=data, teacher=parent,
                         out=tmp_path / f"{name}.pt", metrics_path=tmp_path / f"{name}.json")
    assert seen == [{0.1}, {0.1}]
    student = build_model("studentnet", 10, **student_kwargs("studentnet", 16, 1.0, small_input=False))
    assert momenta(rounds.follow_the_cut(student)) == {0.1}
    average = nn.BatchNorm2d(4, momentum=None)
    assert rounds.follow_the_cut(average).momentum is None


# ---------------------------------------------------------------- registry rules

def test_small_input_adaptation():
    """Stem stride 1 (and ResNet's stem max-pool gone): 4x (16x) the positions after the stem, same weights."""
    for arch, factor in (("mobilenet_v3_small", 2), ("resnet18", 4)):
        plain, small = build_model(arch, 3), build_model(arch, 3, small_input=True)
        assert [k for k in plain.state_dict()] == [k for k in small.state_dict()]
        feats = {}
        stem = "features.0" if arch.startswith("mobilenet") else "layer1"
        for name, m in (("plain", plain), ("small", small)):
            m.get_submodule(stem).register_forward_hook(lambda mod, i, o, name=name: feats.__setitem__(name, o.shape))
            m.eval()(images(1))
        assert feats["small"][-1] == SIZE == feats["plain"][-1] * factor  # 28 px: 14 (7 after ResNet's max-pool)


def test_unsupported_archs_are_params_errors():
    """Unknown names, nets without BatchNorm and Torch-Pruning's known failure are refused up front, by name."""
    for arch, why in (("no_such_net", "unknown model"), ("convnext_tiny", "no BatchNorm2d"),
                      ("shufflenet_v2_x0_5", "ZeroDivisionError")):
        with pytest.raises(ValueError, match=why):
            check_arch(arch, "student")
        with pytest.raises(ParamsError, match=rf"student_net.arch: .*{arch}"):
            validate({"student_net": {"arch": arch}})
    check_arch("convnext_tiny", "teacher")  # a teacher need not be slimmable
    check_arch("regnet_x_400mf", "student")  # its builder cannot run on the meta device: checked on the CPU instead
    with pytest.raises(ParamsError, match="teacher.arch"):
        validate({"teacher": {"arch": "no_such_net"}})
    assert "mobilenet_v3_small" in torchvision_archs() and "resnet18" in torchvision_archs()
    validate({"student_net": {"arch": "mobilenet_v3_small"}, "teacher": {"arch": "mobilenet_v2"}})


def test_structure_mismatch_is_an_artifact_error(tmp_path):
    pruned, _ = slim(make("mobilenet_v3_small"), 0.5, PruneParams())
    kwargs = rebuild_kwargs(pruned, {"small_input": True})
    kwargs["structure"] = {**kwargs["structure"], "features.99.conv": [1, 2, 1]}
    save_checkpoint(tmp_path / "bad.pt", pruned, name="mobilenet_v3_small", model_kwargs=kwargs, num_classes=3,
                    data_meta=ckpt_of(pruned, "x", {})["data"], params={})
    with pytest.raises(ValueError, match="features.99.conv"):
        model_from_checkpoint(tmp_path / "bad.pt")


# ---------------------------------------------------------------- end to end

@pytest.mark.slow
def test_dvc_repro_with_a_torchvision_student(tiny_run, tmp_path):
    """The tiny pipeline with `student_net.arch: mobilenet_v3_small` (reusing the shared tiny project's prepared
    data and teacher): the round is physically smaller, its checkpoints rebuild from plain data, and every
    artifact is evaluated. One round keeps it to a minute or two (a round after a round runs the same code:
    test_pipeline_e2e's StudentNet chain), and no screen, scratch stage or quantized control; the small-input stem
    is covered by test_small_input_adaptation."""
    import json

    import yaml

    from conftest import copy_project, dvc

    proj = copy_project(tiny_run, tmp_path / "proj")
    params = yaml.safe_load((proj / "params.yaml").read_text())
    params["student_net"].update(arch="mobilenet_v3_small", small_input=False)
    params["slim"]["l1"] = 1e-4
    params["prune"]["rounds"] = dict(list(params["prune"]["rounds"].items())[:1])
    params["prune"]["search"]["epochs"] = 0  # no screen (the default): the first round probes the ladder's middle
    params["prune"]["scratch"] = []  # the optional stage is test_pipeline_e2e's (StudentNet); not retrained here
    params["quantize"]["models"] = ["distill"]  # nor its twin (or the control: the same export as distill) quantized
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = dvc(proj, "repro")
    assert "Running stage 'teacher'" not in proc.stdout  # the teacher and the data are reused
    distill = json.loads((proj / "models/distill.run.json").read_text())["params"]
    m = json.loads((proj / "models/prune_1.run.json").read_text())  # every figure of the round
    assert m["params"] < distill  # the round is physically smaller than its parent
    ckpt = torch.load(proj / "models/prune_1.pt", weights_only=True)
    assert ckpt["model"] == "mobilenet_v3_small" and ckpt["model_kwargs"]["small_input"] is False
    assert count_params(model_from_checkpoint(ckpt)) == m["params"]
    assert set(m["channels"]) == set(ckpt["base_channels"])
    assert json.loads((proj / "search/curve.json").read_text())["curve"] == []
    assert json.loads((proj / "search/plan/prune_1.json").read_text())["width"] == 0.9  # the middle of [0.9, 0.8]
    ev = json.loads((proj / "metrics" / "evaluate.json").read_text())
    # MobileNetV3's BatchNorm momentum (0.01) leaves its running statistics near their init after the tiny run's
    # few dozen steps (docs/own-model.md), so its accuracy is not asserted above chance here (the StudentNet
    # chain's is, in test_pipeline_e2e); each artifact must still agree with its fp32 parent
    for k in ("fp16", "uint8", "int8", "int8w"):
        assert abs(ev[f"prune_1.{k}"]["test_acc"] - ev["prune_1"]["test_acc"]) <= 0.1, k
    assert ev["prune_1"]["params"] == m["params"] < ev["distill"]["params"] == distill
