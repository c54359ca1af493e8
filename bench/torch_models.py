"""The three reference models of DESIGN.md in PyTorch, built exactly as
nn/models.cpp and nn/blocks.cpp build them, and DESIGN's fp32 recipe.

The module tree mirrors qforge's, so the state_dict names are qforge's names
("0.conv.weight", "1.conv1.bn.running_mean", "6.weight"); the only extra entry
PyTorch has is BatchNorm's num_batches_tracked, which state_shapes() leaves out.

Run with Debian's torch: /usr/bin/python3 bench/torch_models.py names resnet20
                         /usr/bin/python3 bench/torch_models.py train lenet --epochs 3
                         /usr/bin/python3 bench/torch_models.py qat lenet runs/lenet/last.safetensors
"""
import argparse
import gzip
import math
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ARCHS = ("lenet", "resnet20", "mbv2")

# Fashion-MNIST's pixel statistics (DESIGN.md).
MEAN, STD = 0.2860, 0.3530


# ---- layers (the names and structure of nn/layers.h and nn/blocks.h) --------

def _act(x, act):
    if act == "relu":
        return F.relu(x)
    if act == "relu6":
        return F.relu6(x)
    return x


class LinearAct(nn.Linear):
    """qforge's Linear: the activation is part of the layer (no extra module,
    so no extra name)."""

    def __init__(self, in_features, out_features, act=None):
        super().__init__(in_features, out_features, bias=True)
        self.act = act

    def forward(self, x):
        return _act(super().forward(x), self.act)


class ConvBnAct(nn.Module):
    """act(bn(conv(x))); conv without bias, padding kernel // 2."""

    def __init__(self, cin, cout, kernel, stride, groups, act):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)  # momentum 0.1, eps 1e-5 as qforge's
        self.act = act

    def forward(self, x):
        return _act(self.bn(self.conv(x)), self.act)


class BasicBlock(nn.Module):
    """relu(conv2(conv1(x)) + shortcut(x)); a 1x1 conv+BN projection when the
    shape changes."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = ConvBnAct(cin, cout, 3, stride, 1, "relu")
        self.conv2 = ConvBnAct(cout, cout, 3, 1, 1, None)
        self.shortcut = ConvBnAct(cin, cout, 1, stride, 1, None) if stride != 1 or cin != cout else None
        self.out_quant = nn.Identity()

    def forward(self, x):
        h = self.conv2(self.conv1(x))
        s = self.shortcut(x) if self.shortcut is not None else x
        return self.out_quant(F.relu(h + s))


class InvertedResidual(nn.Module):
    """1x1 expand + ReLU6, 3x3 depthwise + ReLU6, 1x1 linear projection, plus
    the input when stride is 1 and channels match."""

    def __init__(self, cin, cout, stride, expansion):
        super().__init__()
        hidden = cin * expansion
        self.expand = ConvBnAct(cin, hidden, 1, 1, 1, "relu6")
        self.depthwise = ConvBnAct(hidden, hidden, 3, stride, hidden, "relu6")
        self.project = ConvBnAct(hidden, cout, 1, 1, 1, None)
        self.residual = stride == 1 and cin == cout
        self.out_quant = nn.Identity()

    def forward(self, x):
        h = self.project(self.depthwise(self.expand(x)))
        return self.out_quant(h + x) if self.residual else h


class GlobalAvgPool(nn.Module):
    """(N, C, H, W) -> (N, C) in one module, as qforge's, so that the
    classifier keeps qforge's index in the Sequential."""

    def forward(self, x):
        return x.mean(dim=(2, 3))


# ---- models (nn/models.cpp) --------------------------------------------------

def lenet(num_classes=10, in_channels=1, image_size=28):
    side = image_size // 4
    return nn.Sequential(
        ConvBnAct(in_channels, 32, 5, 1, 1, "relu"),
        nn.MaxPool2d(2, 2),
        ConvBnAct(32, 64, 5, 1, 1, "relu"),
        nn.MaxPool2d(2, 2),
        nn.Flatten(),
        LinearAct(64 * side * side, 128, "relu"),
        LinearAct(128, num_classes, None),
    )


def resnet20(num_classes=10, in_channels=1, image_size=28):
    layers = [ConvBnAct(in_channels, 16, 3, 1, 1, "relu")]
    cin = 16
    for width in (16, 32, 64):
        for i in range(3):
            stride = 2 if i == 0 and width != 16 else 1
            layers.append(BasicBlock(cin, width, stride))
            cin = width
    layers += [GlobalAvgPool(), LinearAct(64, num_classes, None)]
    return nn.Sequential(*layers)


def mbv2(num_classes=10, in_channels=1, image_size=28):
    layers = [ConvBnAct(in_channels, 16, 3, 1, 1, "relu6")]
    for cin, cout, stride in ((16, 16, 1), (16, 24, 2), (24, 24, 1), (24, 32, 2), (32, 32, 1)):
        layers.append(InvertedResidual(cin, cout, stride, 4))
    layers += [ConvBnAct(32, 128, 1, 1, 1, "relu6"), GlobalAvgPool(), LinearAct(128, num_classes, None)]
    return nn.Sequential(*layers)


def build_model(arch, num_classes=10, in_channels=1, image_size=28, seed=0):
    """The model with PyTorch's default initialization drawn from `seed`
    (the same distributions as qforge's, not the same numbers)."""
    builders = {"lenet": lenet, "resnet20": resnet20, "mbv2": mbv2}
    if arch not in builders:
        raise ValueError(f"unknown model arch '{arch}' (expected one of {', '.join(ARCHS)})")
    torch.manual_seed(seed)
    return builders[arch](num_classes, in_channels, image_size)


def state_shapes(model):
    """(name, shape) in qforge's order of Module::state(): every parameter,
    then every buffer, each in module pre-order; without num_batches_tracked."""
    params = [(n, tuple(p.shape)) for n, p in model.named_parameters()]
    buffers = [(n, tuple(b.shape)) for n, b in model.named_buffers()
               if not n.endswith("num_batches_tracked")]
    return params + buffers


# ---- DESIGN's fp32 recipe -----------------------------------------------------

def load_idx(images_gz, labels_gz):
    """Fashion-MNIST's IDX files -> (float32 images N x 1 x 28 x 28 normalized,
    int64 labels)."""
    with gzip.open(images_gz, "rb") as f:
        raw = f.read()
    n, rows, cols = (int.from_bytes(raw[i:i + 4], "big") for i in (4, 8, 12))
    images = np.frombuffer(raw, np.uint8, n * rows * cols, 16).reshape(n, 1, rows, cols)
    with gzip.open(labels_gz, "rb") as f:
        labels = np.frombuffer(f.read(), np.uint8, n, 8)
    x = (images.astype(np.float32) / 255.0 - MEAN) / STD
    return torch.from_numpy(x), torch.from_numpy(labels.astype(np.int64))


def evaluate(model, x, y, batch=512):
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            correct += (model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum().item()
    return 100.0 * correct / len(x)


def flipped_batches(images, labels, batch, gen):
    """One epoch in a random order (torch.randperm from `gen`), each image
    flipped horizontally with probability 1/2: (x, y) per batch; the last
    partial batch is kept."""
    order = torch.randperm(len(images), generator=gen)
    for i in range(0, len(images), batch):
        idx = order[i:i + batch]
        x, y = images[idx], labels[idx]
        flip = torch.rand(len(idx), generator=gen) < 0.5
        yield torch.where(flip[:, None, None, None], x.flip(3), x), y


def sgd_step(model, opt, x, y):
    """One cross-entropy step; returns the loss."""
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss


def train_fp32(arch, data_dir="/usr/share/datasets/fashion-mnist", epochs=3, batch=128, lr=0.05,
               momentum=0.9, weight_decay=5e-4, seed=0, threads=2, log=print):
    """DESIGN's fp32 recipe: batch 128, SGD momentum 0.9, weight decay 5e-4 (on
    every parameter, PyTorch's default), lr 0.05 with cosine decay to 0 over
    the run (stepped per batch), seed 0, random horizontal flip only. The last
    partial batch of an epoch is kept. Returns (model, test accuracy %)."""
    torch.set_num_threads(threads)
    train_x, train_y = load_idx(os.path.join(data_dir, "train-images-idx3-ubyte.gz"),
                                os.path.join(data_dir, "train-labels-idx1-ubyte.gz"))
    test_x, test_y = load_idx(os.path.join(data_dir, "t10k-images-idx3-ubyte.gz"),
                              os.path.join(data_dir, "t10k-labels-idx1-ubyte.gz"))
    model = build_model(arch, seed=seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(train_x) / batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch, eta_min=0.0)
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        model.train()
        start, seen, loss_sum = time.time(), 0, 0.0
        for x, y in flipped_batches(train_x, train_y, batch, gen):
            loss = sgd_step(model, opt, x, y)
            sched.step()
            seen += len(y)
            loss_sum += loss.item() * len(y)
        acc = evaluate(model, test_x, test_y)
        log(f"epoch {epoch + 1}/{epochs}: train loss {loss_sum / seen:.4f}, test acc {acc:.2f}%, "
            f"{seen / (time.time() - start):.0f} img/s")
    return model, acc


def load_qforge_checkpoint(model, path):
    """Loads the model.* tensors of a qforge fp32 checkpoint (safetensors)
    into `model`; raises ValueError naming what does not match."""
    import json
    import struct
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        blob = f.read()
    state = {}
    for name, info in header.items():
        if not name.startswith("model."):
            continue
        a, b = info["data_offsets"]
        state[name[len("model."):]] = torch.from_numpy(
            np.frombuffer(blob[a:b], np.float32).reshape(info["shape"]).copy())
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [m for m in missing if not m.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(f"{path}: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return model


def qat_int8(arch, checkpoint, engine="onednn", data_dir="/usr/share/datasets/fashion-mnist",
             epochs=1, batch=128, lr=0.005, momentum=0.9, weight_decay=5e-4,
             freeze_bn_frac=0.5, freeze_ranges_frac=0.75, seed=0, threads=2, log=print):
    """DESIGN's QAT comparison recipe in PyTorch 1.13 (FX graph mode, the
    engine's default QAT qconfig): from a qforge fp32 checkpoint, SGD at a
    constant lr, BN statistics frozen after freeze_bn_frac of the steps and
    observers after freeze_ranges_frac, random horizontal flips as in the fp32
    recipe. Returns (fake-quant test accuracy %, int8 test accuracy %)."""
    from torch.ao.quantization import disable_observer, get_default_qat_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_qat_fx
    from torch.nn.intrinsic.qat import freeze_bn_stats
    torch.set_num_threads(threads)
    torch.backends.quantized.engine = engine
    train_x, train_y = load_idx(os.path.join(data_dir, "train-images-idx3-ubyte.gz"),
                                os.path.join(data_dir, "train-labels-idx1-ubyte.gz"))
    test_x, test_y = load_idx(os.path.join(data_dir, "t10k-images-idx3-ubyte.gz"),
                              os.path.join(data_dir, "t10k-labels-idx1-ubyte.gz"))
    model = load_qforge_checkpoint(build_model(arch, seed=seed), checkpoint).train()
    model = prepare_qat_fx(model, get_default_qat_qconfig_mapping(engine),
                           example_inputs=(train_x[:1],))
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    steps = epochs * math.ceil(len(train_x) / batch)
    freeze_bn_at, freeze_ranges_at = int(steps * freeze_bn_frac), int(steps * freeze_ranges_frac)
    gen = torch.Generator().manual_seed(seed)
    step = 0
    for epoch in range(epochs):
        model.train()
        for x, y in flipped_batches(train_x, train_y, batch, gen):
            if step == freeze_bn_at:
                model.apply(freeze_bn_stats)
                log(f"step {step}: BN statistics frozen")
            if step == freeze_ranges_at:
                model.apply(disable_observer)
                log(f"step {step}: ranges frozen")
            sgd_step(model, opt, x, y)
            step += 1
    fake_quant = evaluate(model, test_x, test_y)
    int8 = evaluate(convert_fx(model.eval()), test_x, test_y)
    return fake_quant, int8


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    names = sub.add_parser("names", help="print 'name shape' of the state, qforge's order")
    names.add_argument("arch", choices=ARCHS)
    train = sub.add_parser("train", help="DESIGN's fp32 recipe; prints the test accuracy")
    train.add_argument("arch", choices=ARCHS)
    train.add_argument("--epochs", type=int, default=3)
    train.add_argument("--threads", type=int, default=2)
    train.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    qat = sub.add_parser("qat", help="DESIGN's QAT comparison recipe from a qforge fp32 checkpoint")
    qat.add_argument("arch", choices=ARCHS)
    qat.add_argument("checkpoint")
    qat.add_argument("--engine", choices=("onednn", "qnnpack", "fbgemm"), default="onednn")
    qat.add_argument("--threads", type=int, default=2)
    qat.add_argument("--seed", type=int, default=0, help="data order and flips")
    qat.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    args = ap.parse_args()
    if args.cmd == "names":
        for name, shape in state_shapes(build_model(args.arch)):
            print(name, "x".join(map(str, shape)))
    elif args.cmd == "qat":
        fq, int8 = qat_int8(args.arch, args.checkpoint, args.engine, args.data, seed=args.seed,
                            threads=args.threads)
        print(f"TORCH qat engine={args.engine} fake_quant_top1={fq:.2f} int8_top1={int8:.2f}")
    else:
        _, acc = train_fp32(args.arch, args.data, epochs=args.epochs, threads=args.threads)
        print(f"{args.arch}: fp32 test accuracy {acc:.2f}%")


if __name__ == "__main__":
    main()
