"""The model registry and the course-exact StudentNet."""
import pytest
import torch

from shrink.models import (
    NORMS, ModelEntry, Slimming, StudentNet, build_model, check_arch, count_params, get_entry, list_models, register,
    slimming_of, student_kwargs, student_widths, torchvision_archs,
)

# The entries the registry lists explicitly (ours and the optional extra's), then a representative handful of
# torchvision's (which are registered generically, one entry per name): a net with residual blocks, one with
# squeeze-excitation and hardswish, an inverted-residual one, and a teacher with no BatchNorm.
OWN = [n for n in list_models() if n not in torchvision_archs()]
TORCHVISION = ["resnet18", "mobilenet_v3_small", "mnasnet0_5", "squeezenet1_1"]

# The course's StudentNet(base=16, width_mult=1) state_dict: (key, shape), in order.
# A course checkpoint (student_custom_small.bin) uses exactly these names and shapes.
_BLOCKS = [(16, 32), (32, 64), (64, 128), (128, 256), (256, 256), (256, 256), (256, 256)]
COURSE_KEYS = [
    ("cnn.0.0.weight", (16, 3, 3, 3)), ("cnn.0.0.bias", (16,)),
    ("cnn.0.1.weight", (16,)), ("cnn.0.1.bias", (16,)), ("cnn.0.1.running_mean", (16,)),
    ("cnn.0.1.running_var", (16,)), ("cnn.0.1.num_batches_tracked", ()),
]
for _i, (_cin, _cout) in enumerate(_BLOCKS, start=1):
    COURSE_KEYS += [
        (f"cnn.{_i}.0.weight", (_cin, 1, 3, 3)), (f"cnn.{_i}.0.bias", (_cin,)),
        (f"cnn.{_i}.1.weight", (_cin,)), (f"cnn.{_i}.1.bias", (_cin,)),
        (f"cnn.{_i}.1.running_mean", (_cin,)), (f"cnn.{_i}.1.running_var", (_cin,)),
        (f"cnn.{_i}.1.num_batches_tracked", ()),
        (f"cnn.{_i}.3.weight", (_cout, _cin, 1, 1)), (f"cnn.{_i}.3.bias", (_cout,)),
    ]
COURSE_KEYS += [("fc.0.weight", (11, 256)), ("fc.0.bias", (11,))]


def test_student_state_dict_matches_course_exactly():
    sd = StudentNet().state_dict()
    assert [(k, tuple(v.shape)) for k, v in sd.items()] == COURSE_KEYS
    assert count_params(StudentNet()) == 256_779


def test_course_checkpoint_loads_strictly(tmp_path):
    # a state_dict written the way the course saved student_custom_small.bin
    course = {k: torch.randn(s) if s else torch.tensor(0) for k, s in COURSE_KEYS}
    torch.save(course, tmp_path / "student_custom_small.bin")
    model = StudentNet()
    model.load_state_dict(torch.load(tmp_path / "student_custom_small.bin", weights_only=True), strict=True)
    assert torch.equal(model.fc[0].weight, course["fc.0.weight"])


def test_width_mult_scales_blocks_3_to_6_like_the_course():
    assert student_widths(16, 0.95) == [16, 32, 64, 121, 243, 243, 243, 256]
    assert StudentNet(width_mult=0.95).widths == StudentNet(widths=[16, 32, 64, 121, 243, 243, 243, 256]).widths


def test_explicit_widths_build_matching_shapes():
    w = [16, 32, 64, 100, 200, 150, 120, 256]
    m = StudentNet(widths=w, num_classes=10)
    sd = m.state_dict()
    assert sd["cnn.4.0.weight"].shape == (100, 1, 3, 3)
    assert sd["cnn.4.3.weight"].shape == (200, 100, 1, 1)
    assert sd["cnn.6.3.weight"].shape == (120, 150, 1, 1)
    assert sd["fc.0.weight"].shape == (10, 256)
    with pytest.raises(ValueError, match="8 positive widths"):
        StudentNet(widths=[16, 32])


def available(name: str) -> None:
    """Skip (with the reason) an entry whose optional package is not installed."""
    requires = get_entry(name).requires
    if requires is not None:
        try:
            requires()
        except ImportError as e:
            pytest.skip(str(e))


@pytest.mark.parametrize("name", [*OWN, *TORCHVISION])
@pytest.mark.parametrize("size", [28, 64])
def test_registry_forward_backward_shapes(name, size):
    available(name)
    torch.manual_seed(0)
    model = build_model(name, num_classes=7, **({"image_size": size} if get_entry(name).image_size else {}))
    x = torch.randn(4, 3, size, size, requires_grad=True)
    out = model(x)
    assert out.shape == (4, 7)
    out.sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_every_entry_is_well_formed():
    """Every registered name (all of torchvision's too), without building a net: a consistent entry, a role it
    can play, a normalisation that exists; the teacher check needs no network and passes where not refused."""
    names = list_models()
    assert set(torchvision_archs()) <= set(names) and {"studentnet", "efficientnet_lite0"} <= set(names)
    assert "student" not in names  # a role, not an arch (no alias either: nothing writes that name any more)
    with pytest.raises(KeyError, match="unknown model 'student'"):
        get_entry("student")
    for name in names:
        e = get_entry(name)
        assert isinstance(e, ModelEntry) and e.name == name and callable(e.factory), name
        assert e.norm in NORMS and set(e.refuse) <= {"student", "teacher"} and len(e.refuse) < 2, name
        assert not (e.small_input and e.image_size), name  # one way to fit small inputs
        if "teacher" in e.refuse:
            with pytest.raises(ValueError, match="cannot be the teacher"):
                check_arch(name, "teacher")
        elif e.requires is None:
            check_arch(name, "teacher")
        if "student" not in e.refuse:
            kw = student_kwargs(name, 16, 1.0, True)
            assert isinstance(kw, dict) and (kw == {"small_input": True}) == e.small_input, name


def test_student_entry_and_slimming_lookup():
    """StudentNet's entry carries its pruning data; any other class gets the default (every torchvision entry's)."""
    assert student_kwargs("studentnet", 16, 0.95, True) == {"widths": student_widths(16, 0.95)}
    assert slimming_of(StudentNet()) is get_entry("studentnet").slimming
    assert slimming_of(StudentNet()).groups([3, 5]) == ["cnn.3.3", "cnn.5.3"]
    with pytest.raises(ValueError, match="1..6"):
        slimming_of(StudentNet()).groups([0])
    assert slimming_of(build_model("resnet18", 3)) == Slimming() == get_entry("resnet18").slimming
    with pytest.raises(ValueError, match="registered twice"):
        register(ModelEntry("resnet18", StudentNet))
    with pytest.raises(ValueError, match="cannot be the student: a teacher only"):
        check_arch("efficientnet_lite0", "student")


def test_unknown_model_is_clear():
    with pytest.raises(KeyError, match="unknown model"):
        build_model("vgg", 10)
    with pytest.raises(ValueError, match="unknown model 'vgg'"):
        check_arch("vgg", "student")
