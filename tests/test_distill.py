"""The KD loss against a value computed by hand."""
import math

import torch

from shrink.distill import kd_loss, make_kd_loss


def _softmax(v):
    e = [math.exp(x) for x in v]
    return [x / sum(e) for x in e]


def test_kd_loss_matches_hand_computation():
    s, t, y = [1.0, 2.0, 0.5], [0.2, 3.0, -1.0], 1
    T, alpha = 2.0, 0.7
    ps, pt = _softmax([x / T for x in s]), _softmax([x / T for x in t])
    kl = sum(q * math.log(q / p) for p, q in zip(ps, pt))  # KL(teacher || student)
    ce = -math.log(_softmax(s)[y])
    expected = alpha * T * T * kl + (1 - alpha) * ce
    got = kd_loss(torch.tensor([s]), torch.tensor([t]), torch.tensor([y]), T, alpha)
    assert abs(got.item() - expected) < 1e-5


def test_kd_loss_is_per_sample_mean_and_zero_kl_when_equal():
    logits = torch.randn(8, 5)
    y = torch.randint(0, 5, (8,))
    ce = torch.nn.functional.cross_entropy(logits, y)
    assert torch.allclose(kd_loss(logits, logits, y, 4.0, 0.5), 0.5 * ce, atol=1e-6)
    one = kd_loss(logits[:1], logits[:1].flip(1), y[:1], 3.0, 1.0)
    two = kd_loss(logits[:1].repeat(2, 1), logits[:1].flip(1).repeat(2, 1), y[:1].repeat(2), 3.0, 1.0)
    assert torch.allclose(one, two)


def test_kd_objective_freezes_teacher_and_only_student_gets_gradients():
    teacher = torch.nn.Linear(4, 3)
    student = torch.nn.Linear(4, 3)
    teacher.train()
    loss_fn = make_kd_loss(teacher, 2.0, 0.5)
    assert not teacher.training
    x = torch.randn(5, 4)
    loss_fn(student(x), torch.randint(0, 3, (5,)), x).backward()
    assert student.weight.grad is not None
    assert teacher.weight.grad is None
