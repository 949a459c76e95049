"""Example 2: a small SNN distilled from a larger ANN teacher, trained on MNIST and deployed.

Shows knowledge distillation into a spiking student, and what it buys:
1. an ANN teacher (a larger CNN, ReLU) is trained first;
2. the same small student SNN (SpikingJelly conv blocks, IF neurons, T = 4) is trained
   twice from the same seed, with the same data and epochs:
   - without KD: cross-entropy only;
   - with KD: response-based KD (KL divergence to the temperature-softened teacher
     outputs, plus cross-entropy; both logit vectors are z-scored first, i.e. divided by
     their own standard deviation -- a per-sample temperature, as in logit-standardised KD,
     which this student's small spike-driven logits need) and feature-based KD: after
     each stage, the student's firing-rate map is matched to the teacher's feature map through a 1x1 conv adapter
     (MSE), and their spatial attention maps (channel-wise mean of squares, normalised,
     as in layer-wise ANN-to-SNN distillation) are matched too;
3. teacher, student with KD and student without KD accuracies are printed;
4. the distilled student goes through the snncompile pipeline: export -> quantize ->
   emulator (float, fixed) -> Lava (a subset) -> energy report.

The student is a plain ``nn.Sequential`` (no ``--trust-code`` needed to load model.pt).
Small students and little data are where KD helps: the student sees 1,000 digits for 10
epochs. Margins measured for seeds 0/1/2: +2.3/+0.9/+1.4 points (benchmarks/RESULTS.md).

    python examples/ex2_distilled_snn.py          # full: a few minutes on 2 cores
    python examples/ex2_distilled_snn.py --fast   # seconds, for the tests
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (accuracy, example_parser, load_mnist, output_dir, seed_everything,  # noqa: E402
                    subset, train)

from spikingjelly.activation_based import functional, layer, neuron, surrogate  # noqa: E402

T = 4
SEED = 0
TEACHER_EPOCHS = 4
STUDENT_EPOCHS = 10
STUDENT_TRAIN = 1000     # training digits for the student (both runs): KD pays off with little data
LR = 5e-3


# -- teacher ------------------------------------------------------------------------------
def build_teacher() -> nn.Sequential:
    """A larger CNN in three parts: stage 1 (32x14x14), stage 2 (64x7x7), head."""
    def stage(c_in, c_out):
        return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
                             nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
                             nn.MaxPool2d(2))
    return nn.Sequential(stage(1, 32), stage(32, 64),
                         nn.Sequential(nn.Flatten(), nn.Linear(64 * 49, 128), nn.ReLU(), nn.Linear(128, 10)))


def teacher_forward(model, images):
    return model(images)


def teacher_features(teacher: nn.Sequential, images: torch.Tensor):
    """Teacher logits and its feature maps at the end of each stage."""
    f1 = teacher[0](images)
    f2 = teacher[1](f1)
    return teacher[2](f2), [f1, f2]


# -- student ------------------------------------------------------------------------------
def conv_block(c_in: int, c_out: int) -> list[nn.Module]:
    return [layer.Conv2d(c_in, c_out, 3, padding=1, bias=False), layer.BatchNorm2d(c_out),
            neuron.IFNode(surrogate_function=surrogate.ATan(), detach_reset=True)]


STUDENT_CHANNELS = (4, 8)
STUDENT_STAGES = (4, 8)    # student[:4] -> stage 1 spikes (4x14x14), student[4:8] -> stage 2 (8x7x7)


def build_student() -> nn.Sequential:
    c1, c2 = STUDENT_CHANNELS
    net = nn.Sequential(*conv_block(1, c1), layer.MaxPool2d(2), *conv_block(c1, c2), layer.MaxPool2d(2),
                        layer.Flatten(), layer.Linear(c2 * 49, 10))
    functional.set_step_mode(net, "m")
    return net


def student_features(student: nn.Sequential, images: torch.Tensor):
    """Student logits (mean head output over T) and each stage's firing-rate map."""
    a, b = STUDENT_STAGES
    s1 = student[:a](images.unsqueeze(0).repeat(T, 1, 1, 1, 1))
    s2 = student[a:b](s1)
    logits = student[b:](s2).mean(0)
    functional.reset_net(student)
    return logits, [s1.mean(0), s2.mean(0)]


def student_forward(student, images):
    return student_features(student, images)[0]


# -- distillation loss ----------------------------------------------------------------------
def attention_map(features: torch.Tensor) -> torch.Tensor:
    """Spatial attention: mean over channels of the squared activation, L2-normalised."""
    return F.normalize(features.pow(2).mean(1).flatten(1), dim=1)


@dataclass
class KDWeights:
    """Tuned on seed 0 (see benchmarks/RESULTS.md): with raw logits, a higher temperature or
    heavier feature terms, KD made this small student *worse* than plain training."""
    temperature: float = 1.0
    alpha: float = 0.9        # share of the KL term against cross-entropy
    feature: float = 0.01     # adapter MSE per stage
    attention: float = 0.1    # attention-map distance per stage
    standardize: bool = True  # KD on z-scored logits: the student's spike-driven logits live on
                              # a much smaller scale than the teacher's


def _zscore(logits: torch.Tensor) -> torch.Tensor:
    return (logits - logits.mean(1, keepdim=True)) / (logits.std(1, keepdim=True) + 1e-6)


class DistillationLoss(nn.Module):
    """Response KD + feature KD (1x1 adapters) + attention transfer, for ``common.train``."""

    def __init__(self, teacher: nn.Sequential, weights: KDWeights = KDWeights()):
        super().__init__()
        self.teacher, self.w = teacher.eval(), weights
        t_channels = (32, 64)
        self.adapters = nn.ModuleList(nn.Conv2d(s, t, 1) for s, t in zip(STUDENT_CHANNELS, t_channels))

    def forward(self, student_out, labels, images):
        logits, rates = student_out
        with torch.no_grad():
            t_logits, t_feats = teacher_features(self.teacher, images)
        tau, w = self.w.temperature, self.w
        s_logits = _zscore(logits) if w.standardize else logits
        if w.standardize:
            t_logits = _zscore(t_logits)
        kl = F.kl_div(F.log_softmax(s_logits / tau, 1), F.softmax(t_logits / tau, 1),
                      reduction="batchmean") * tau * tau
        loss = (1 - w.alpha) * F.cross_entropy(logits, labels) + w.alpha * kl
        for adapter, rate, feat in zip(self.adapters, rates, t_feats):
            loss = loss + w.feature * F.mse_loss(adapter(rate), feat)
            loss = loss + w.attention * (attention_map(rate) - attention_map(feat)).pow(2).sum(1).mean()
        return loss


def train_student(data, with_kd: bool, teacher, epochs: int, seed: int) -> nn.Sequential:
    """The same architecture, seed, data and epochs either way; only the loss differs."""
    seed_everything(seed)
    student = build_student()
    x, y = data.x_train[:STUDENT_TRAIN], data.y_train[:STUDENT_TRAIN]
    if with_kd:
        kd = DistillationLoss(teacher)
        train(student, x, y, student_features, epochs=epochs, lr=LR, loss=kd,
              params=list(student.parameters()) + list(kd.adapters.parameters()),
              desc="student with KD", seed=seed)
    else:
        train(student, x, y, student_forward, epochs=epochs, lr=LR, desc="student without KD", seed=seed)
    return student


def main(fast: bool = False, out=None, n_lava: int = 100, seed: int = SEED):
    seed_everything(seed)
    data = load_mnist()
    if fast:
        data = subset(data, 300, 60)
    teacher = build_teacher()
    train(teacher, data.x_train, data.y_train, teacher_forward, epochs=1 if fast else TEACHER_EPOCHS,
          lr=2e-3, desc="ANN teacher", seed=seed)
    epochs = 1 if fast else STUDENT_EPOCHS
    plain = train_student(data, False, teacher, epochs, seed)
    distilled = train_student(data, True, teacher, epochs, seed)
    accs = {"teacher ANN": accuracy(teacher, data.x_test, data.y_test, teacher_forward),
            "student SNN without KD": accuracy(plain, data.x_test, data.y_test, student_forward),
            "student SNN with KD": accuracy(distilled, data.x_test, data.y_test, student_forward)}
    for what, acc in accs.items():
        print(f"{what:24s} {100 * acc:5.1f} %  ({len(data.x_test)} test digits, seed {seed})")
    margin = accs["student SNN with KD"] - accs["student SNN without KD"]
    print(f"KD margin: {100 * margin:+.1f} points")

    folder = output_dir("ex2_distilled_snn", out)
    functional.set_step_mode(distilled, "s")
    functional.reset_net(distilled)
    torch.save(distilled.eval(), folder / "model.pt")
    torch.save(teacher.eval(), folder / "teacher.pt")

    from snncompile.pipeline import deploy
    result = deploy(distilled, "mnist_distilled_snn", (1, 28, 28), T, data.x_test, data.y_test, folder,
                    x_calib=data.x_train[:200], n_lava=6 if fast else n_lava,
                    torch_accuracy=accs["student SNN with KD"])
    print(result.table())
    return result, accs


if __name__ == "__main__":
    parser = example_parser(__doc__, "ex2_distilled_snn")
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args()
    main(fast=args.fast, out=args.out, n_lava=args.lava, seed=args.seed)
