#!/usr/bin/env python3
"""Generates model-family ONNX models with seeded random weights, their inputs, and reference
outputs computed by onnxruntime, for the engine's end-to-end tests and benchmarks.

    make_families.py OUT_DIR [--size test|bench] [--families a,b,...] [--list]

Writes OUT_DIR/<family>/model.onnx, input_<i>.npy (the model's i-th input), output_<j>.npy
(onnxruntime's j-th output); families with a dynamic axis also get a second case with other
shapes (case1_input_<i>.npy, case1_output_<j>.npy). OUT_DIR/manifest.json lists every family,
its input/output names, shapes, dtypes and files (relative to OUT_DIR), its op histogram and
the comparison tolerance (rtol 1e-3, atol 1e-4).

The models are written in plain torch (no torchvision) and exported with torch.onnx at opset
17 (torch 1.13's highest). Weights are random but seeded and scaled so that activations stay
of order one through the whole network (so that atol does not hide errors). Models are
generated, never committed: write them under build/ or /tmp.

Sizes: `test` (default) makes small models that run in well under a second each on a CPU;
`bench` makes the benchmark sizes: ResNet-18 and MobileNetV2 at 1x3x224x224, BERT-base
(12 layers, hidden 768, 12 heads, seq 128), GPT-2 small (12 layers, 768, seq 64), MLP
1024-4096-4096-1000 at batch 1, and full-size variants of the other families.

Needs torch, numpy, onnx and onnxruntime: run it with the project's .venv/bin/python
(scripts/python_env.sh makes it).
"""
import argparse
import collections
import hashlib
import json
import math
import os
import sys
import time
import warnings

import numpy as np
import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F

OPSET = 17
RTOL = 1e-3
ATOL = 1e-4
SEED = 1234

# ---------------------------------------------------------------------------------------------
# Weight initialisation: seeded, scaled to keep activations of order one.


def init_weights(model, seed, transformer=False):
    g = torch.Generator().manual_seed(seed)

    def uniform(t, lo, hi):
        with torch.no_grad():
            t.copy_(torch.rand(t.shape, generator=g) * (hi - lo) + lo)

    def normal(t, std):
        with torch.no_grad():
            t.copy_(torch.randn(t.shape, generator=g) * std)

    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            w = m.weight
            if isinstance(m, nn.ConvTranspose2d):
                fan_in = w.shape[0] // m.groups * w.shape[2] * w.shape[3] // (m.stride[0] * m.stride[1])
            else:
                fan_in = w[0].numel()
            gain = 1.0 if transformer else 2.0  # He init for ReLU-like nets
            normal(w, math.sqrt(gain / max(fan_in, 1)))
            if m.bias is not None:
                uniform(m.bias, -0.1, 0.1)
        elif isinstance(m, nn.BatchNorm2d):
            uniform(m.weight, 0.5, 1.5)
            uniform(m.bias, -0.2, 0.2)
            uniform(m.running_mean, -0.2, 0.2)
            uniform(m.running_var, 0.5, 1.5)
        elif isinstance(m, nn.LayerNorm):
            uniform(m.weight, 0.5, 1.5)
            uniform(m.bias, -0.1, 0.1)
        elif isinstance(m, nn.Embedding):
            normal(m.weight, 1.0)
    model.eval()
    return model


def make_divisible(v, divisor=8, min_value=None):
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class ConvBNAct(nn.Sequential):
    def __init__(self, cin, cout, k=3, stride=1, groups=1, act=nn.ReLU):
        layers = [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
        if act is not None:
            layers.append(act())
        super().__init__(*layers)


# ---------------------------------------------------------------------------------------------
# MLP


class MLP(nn.Module):
    def __init__(self, dims):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i + 1 < len(self.layers):
                x = F.relu(x)
        return x


# ---------------------------------------------------------------------------------------------
# ResNet-18 (torchvision's layout, written out)


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        idn = x if self.down is None else self.down(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + idn)


class ResNet18(nn.Module):
    def __init__(self, widths=(64, 128, 256, 512), classes=1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        layers, cin = [], widths[0]
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            layers += [BasicBlock(cin, w, stride), BasicBlock(w, w, 1)]
            cin = w
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.layers(x)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x)


# ---------------------------------------------------------------------------------------------
# MobileNetV2


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = int(round(cin * expand))
        self.use_res = stride == 1 and cin == cout
        layers = []
        if expand != 1:
            layers.append(ConvBNAct(cin, hidden, 1, act=nn.ReLU6))
        layers += [ConvBNAct(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, width=1.0, classes=1000):
        super().__init__()
        cfg = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
        cin = make_divisible(32 * width)
        last = make_divisible(1280 * max(1.0, width))
        layers = [ConvBNAct(3, cin, 3, 2, act=nn.ReLU6)]
        for t, c, n, s in cfg:
            cout = make_divisible(c * width)
            for i in range(n):
                layers.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        layers.append(ConvBNAct(cin, last, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, classes))

    def forward(self, x):
        x = self.features(x)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.classifier(x)


# ---------------------------------------------------------------------------------------------
# MobileNetV3-small (HardSwish, HardSigmoid, squeeze-excite)


class SqueezeExcite(nn.Module):
    def __init__(self, c, squeeze, act=nn.ReLU, gate=nn.Hardsigmoid):
        super().__init__()
        self.fc1 = nn.Conv2d(c, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, c, 1)
        self.act = act()
        self.gate = gate()

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        s = self.gate(self.fc2(self.act(self.fc1(s))))
        return x * s


class V3Block(nn.Module):
    def __init__(self, cin, k, exp, cout, se, act, stride):
        super().__init__()
        self.use_res = stride == 1 and cin == cout
        layers = []
        if exp != cin:
            layers.append(ConvBNAct(cin, exp, 1, act=act))
        layers.append(ConvBNAct(exp, exp, k, stride, groups=exp, act=act))
        if se:
            layers.append(SqueezeExcite(exp, make_divisible(exp // 4)))
        layers.append(ConvBNAct(exp, cout, 1, act=None))
        self.block = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.block(x) if self.use_res else self.block(x)


class MobileNetV3Small(nn.Module):
    def __init__(self, width=1.0, classes=1000):
        super().__init__()
        RE, HS = nn.ReLU, nn.Hardswish
        cfg = [(3, 16, 16, True, RE, 2), (3, 72, 24, False, RE, 2), (3, 88, 24, False, RE, 1),
               (5, 96, 40, True, HS, 2), (5, 240, 40, True, HS, 1), (5, 240, 40, True, HS, 1),
               (5, 120, 48, True, HS, 1), (5, 144, 48, True, HS, 1), (5, 288, 96, True, HS, 2),
               (5, 576, 96, True, HS, 1), (5, 576, 96, True, HS, 1)]
        cin = make_divisible(16 * width)
        layers = [ConvBNAct(3, cin, 3, 2, act=HS)]
        for k, exp, c, se, act, s in cfg:
            cout = make_divisible(c * width)
            layers.append(V3Block(cin, k, make_divisible(exp * width), cout, se, act, s))
            cin = cout
        last_conv = 6 * cin
        layers.append(ConvBNAct(cin, last_conv, 1, act=HS))
        self.features = nn.Sequential(*layers)
        hidden = make_divisible(1024 * width)
        self.classifier = nn.Sequential(nn.Linear(last_conv, hidden), nn.Hardswish(), nn.Dropout(0.2),
                                        nn.Linear(hidden, classes))

    def forward(self, x):
        x = self.features(x)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.classifier(x)


# ---------------------------------------------------------------------------------------------
# SqueezeNet 1.1 (Fire modules, concat, ceil-mode max pooling)


class Fire(nn.Module):
    def __init__(self, cin, squeeze, expand):
        super().__init__()
        self.squeeze = nn.Conv2d(cin, squeeze, 1)
        self.expand1 = nn.Conv2d(squeeze, expand, 1)
        self.expand3 = nn.Conv2d(squeeze, expand, 3, padding=1)

    def forward(self, x):
        x = F.relu(self.squeeze(x))
        return torch.cat([F.relu(self.expand1(x)), F.relu(self.expand3(x))], 1)


class SqueezeNet(nn.Module):
    def __init__(self, div=1, classes=1000):
        super().__init__()
        c = lambda v: max(4, v // div)  # noqa: E731
        pool = lambda: nn.MaxPool2d(3, 2, ceil_mode=True)  # noqa: E731
        self.features = nn.Sequential(
            nn.Conv2d(3, c(64), 3, 2), nn.ReLU(), pool(),
            Fire(c(64), c(16), c(64)), Fire(c(128), c(16), c(64)), pool(),
            Fire(c(128), c(32), c(128)), Fire(c(256), c(32), c(128)), pool(),
            Fire(c(256), c(48), c(192)), Fire(c(384), c(48), c(192)),
            Fire(c(384), c(64), c(256)), Fire(c(512), c(64), c(256)))
        self.classifier = nn.Sequential(nn.Dropout(0.5), nn.Conv2d(c(512), classes, 1), nn.ReLU())

    def forward(self, x):
        x = self.classifier(self.features(x))
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


# ---------------------------------------------------------------------------------------------
# ShuffleNetV2 (channel split, channel shuffle as reshape/transpose/reshape)


def channel_shuffle(x, groups):
    b, c, h, w = x.size()
    x = x.view(b, groups, c // groups, h, w)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(b, -1, h, w)


class ShuffleUnit(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.stride = stride
        branch = cout // 2
        if stride > 1:
            self.branch1 = nn.Sequential(ConvBNAct(cin, cin, 3, stride, groups=cin, act=None),
                                         ConvBNAct(cin, branch, 1))
        else:
            self.branch1 = None
        bin_ = cin if stride > 1 else branch
        self.branch2 = nn.Sequential(ConvBNAct(bin_, branch, 1), ConvBNAct(branch, branch, 3, stride, groups=branch, act=None),
                                     ConvBNAct(branch, branch, 1))

    def forward(self, x):
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), 1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), 1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    def __init__(self, channels=(24, 116, 232, 464, 1024), repeats=(4, 8, 4), classes=1000):
        super().__init__()
        self.conv1 = ConvBNAct(3, channels[0], 3, 2)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        stages, cin = [], channels[0]
        for n, cout in zip(repeats, channels[1:4]):
            units = [ShuffleUnit(cin, cout, 2)] + [ShuffleUnit(cout, cout, 1) for _ in range(n - 1)]
            stages.append(nn.Sequential(*units))
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.conv5 = ConvBNAct(cin, channels[4], 1)
        self.fc = nn.Linear(channels[4], classes)

    def forward(self, x):
        x = self.conv5(self.stages(self.maxpool(self.conv1(x))))
        return self.fc(x.mean([2, 3]))


# ---------------------------------------------------------------------------------------------
# EfficientNet-style MBConv stack (SiLU, squeeze-excite with sigmoid gate)


class MBConv(nn.Module):
    def __init__(self, cin, cout, k, stride, expand):
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        layers = []
        if expand != 1:
            layers.append(ConvBNAct(cin, hidden, 1, act=nn.SiLU))
        layers += [ConvBNAct(hidden, hidden, k, stride, groups=hidden, act=nn.SiLU),
                   SqueezeExcite(hidden, max(1, cin // 4), act=nn.SiLU, gate=nn.Sigmoid),
                   ConvBNAct(hidden, cout, 1, act=None)]
        self.block = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.block(x) if self.use_res else self.block(x)


class EfficientNet(nn.Module):
    # B0 stages: (expand, channels, repeats, stride, kernel)
    B0 = [(1, 16, 1, 1, 3), (6, 24, 2, 2, 3), (6, 40, 2, 2, 5), (6, 80, 3, 2, 3), (6, 112, 3, 1, 5),
          (6, 192, 4, 2, 5), (6, 320, 1, 1, 3)]

    def __init__(self, width=1.0, depth_cap=None, classes=1000):
        super().__init__()
        cin = make_divisible(32 * width)
        layers = [ConvBNAct(3, cin, 3, 2, act=nn.SiLU)]
        for t, c, n, s, k in self.B0:
            cout = make_divisible(c * width)
            n = min(n, depth_cap) if depth_cap else n
            for i in range(n):
                layers.append(MBConv(cin, cout, k, s if i == 0 else 1, t))
                cin = cout
        last = make_divisible(1280 * width)
        layers.append(ConvBNAct(cin, last, 1, act=nn.SiLU))
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(last, classes)

    def forward(self, x):
        x = torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1)
        return self.fc(x)


# ---------------------------------------------------------------------------------------------
# Small U-Net (BatchNorm on the input, max-pool down, ConvTranspose and Resize up, skip concat)


class DoubleConv(nn.Sequential):
    def __init__(self, cin, cout):
        super().__init__(ConvBNAct(cin, cout, 3), ConvBNAct(cout, cout, 3))


class UNet(nn.Module):
    def __init__(self, cin=3, classes=2, base=8, depth=3):
        super().__init__()
        self.norm = nn.BatchNorm2d(cin)  # not after a conv, so the exporter keeps BatchNormalization
        chans = [base * 2 ** i for i in range(depth + 1)]
        self.inc = DoubleConv(cin, chans[0])
        self.downs = nn.ModuleList(DoubleConv(chans[i], chans[i + 1]) for i in range(depth))
        self.ups = nn.ModuleList()
        self.up_convs = nn.ModuleList()
        for i in reversed(range(depth)):
            # Alternate learned (ConvTranspose) and fixed (Resize: bilinear, nearest) upsampling.
            kind = (depth - 1 - i) % 3
            if kind == 0:
                up = nn.ConvTranspose2d(chans[i + 1], chans[i], 2, stride=2)
            elif kind == 1:
                up = nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                                   nn.Conv2d(chans[i + 1], chans[i], 1))
            else:
                up = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(chans[i + 1], chans[i], 1))
            self.ups.append(up)
            self.up_convs.append(DoubleConv(2 * chans[i], chans[i]))
        self.outc = nn.Conv2d(chans[0], classes, 1)

    def forward(self, x):
        x = self.inc(self.norm(x))
        skips = [x]
        for down in self.downs:
            x = down(F.max_pool2d(x, 2))
            skips.append(x)
        skips.pop()
        for up, conv in zip(self.ups, self.up_convs):
            x = conv(torch.cat([skips.pop(), up(x)], 1))
        return self.outc(x)


# ---------------------------------------------------------------------------------------------
# BERT / MiniLM-style encoder


class SelfAttention(nn.Module):
    def __init__(self, hidden, heads):
        super().__init__()
        self.heads, self.head_dim = heads, hidden // heads
        self.q = nn.Linear(hidden, hidden)
        self.k = nn.Linear(hidden, hidden)
        self.v = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, hidden)

    def split(self, x):
        return x.view(x.size(0), x.size(1), self.heads, self.head_dim).permute(0, 2, 1, 3)

    def forward(self, x, mask_bias):
        q, k, v = self.split(self.q(x)), self.split(self.k(x)), self.split(self.v(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim) + mask_bias
        ctx = torch.matmul(torch.softmax(scores, -1), v).permute(0, 2, 1, 3).contiguous()
        return self.out(ctx.view(ctx.size(0), ctx.size(1), -1))


class BertLayer(nn.Module):
    def __init__(self, hidden, heads, inter):
        super().__init__()
        self.attn = SelfAttention(hidden, heads)
        self.ln1 = nn.LayerNorm(hidden, eps=1e-12)
        self.fc1 = nn.Linear(hidden, inter)
        self.fc2 = nn.Linear(inter, hidden)
        self.ln2 = nn.LayerNorm(hidden, eps=1e-12)

    def forward(self, x, mask_bias):
        x = self.ln1(x + self.attn(x, mask_bias))
        return self.ln2(x + self.fc2(F.gelu(self.fc1(x))))


class Bert(nn.Module):
    def __init__(self, vocab=30522, hidden=768, layers=12, heads=12, inter=3072, max_pos=512, types=2):
        super().__init__()
        self.word = nn.Embedding(vocab, hidden)
        self.pos = nn.Embedding(max_pos, hidden)
        self.token_type = nn.Embedding(types, hidden)
        self.ln = nn.LayerNorm(hidden, eps=1e-12)
        self.register_buffer("position_ids", torch.arange(max_pos).unsqueeze(0))
        self.layers = nn.ModuleList(BertLayer(hidden, heads, inter) for _ in range(layers))
        self.pooler = nn.Linear(hidden, hidden)

    def forward(self, input_ids, attention_mask, token_type_ids):
        seq = input_ids.size(1)
        pos = self.position_ids[:, :seq]
        x = self.ln(self.word(input_ids) + self.pos(pos) + self.token_type(token_type_ids))
        mask_bias = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * -10000.0
        for layer in self.layers:
            x = layer(x, mask_bias)
        pooled = torch.tanh(self.pooler(x[:, 0]))
        return x, pooled


# ---------------------------------------------------------------------------------------------
# GPT-2-style decoder (pre-LN, fused QKV + Split, causal mask with Trilu + Where, tanh GELU,
# tied LM head)


def gelu_tanh(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


class GPT2Block(nn.Module):
    def __init__(self, hidden, heads):
        super().__init__()
        self.heads, self.head_dim = heads, hidden // heads
        self.ln1 = nn.LayerNorm(hidden, eps=1e-5)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.ln2 = nn.LayerNorm(hidden, eps=1e-5)
        self.fc = nn.Linear(hidden, 4 * hidden)
        self.fc_proj = nn.Linear(4 * hidden, hidden)

    def attn(self, x):
        b, t = x.size(0), x.size(1)
        q, k, v = self.qkv(x).split(x.size(2), dim=2)
        q, k, v = (z.view(b, t, self.heads, self.head_dim).transpose(1, 2) for z in (q, k, v))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)
        causal = torch.tril(torch.ones(t, t, dtype=x.dtype, device=x.device))
        scores = scores.masked_fill(causal == 0, -1e9)
        y = torch.matmul(torch.softmax(scores, -1), v).transpose(1, 2).contiguous().view(b, t, -1)
        return self.proj(y)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.fc_proj(gelu_tanh(self.fc(self.ln2(x))))


class GPT2(nn.Module):
    def __init__(self, vocab=50257, hidden=768, layers=12, heads=12, ctx=1024):
        super().__init__()
        self.wte = nn.Embedding(vocab, hidden)
        self.wpe = nn.Embedding(ctx, hidden)
        self.blocks = nn.ModuleList(GPT2Block(hidden, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(hidden, eps=1e-5)
        self.register_buffer("position_ids", torch.arange(ctx).unsqueeze(0))
        self.head_scale = 1.0 / math.sqrt(hidden)

    def forward(self, input_ids):
        t = input_ids.size(1)
        x = self.wte(input_ids) + self.wpe(self.position_ids[:, :t])
        for block in self.blocks:
            x = block(x)
        # Tied LM head; scaled so the logits stay of order one.
        return torch.matmul(self.ln_f(x), self.wte.weight.t()) * self.head_scale


# ---------------------------------------------------------------------------------------------
# Family table


def image_family(build, shape_test, shape_bench, classes_out="logits"):
    def make(size, rng):
        model, shape = build(size), (shape_test if size == "test" else shape_bench)
        x = rng.standard_normal(shape).astype(np.float32)
        extra = None
        if size == "test":  # a second case with another batch size (the batch axis is dynamic)
            extra = [rng.standard_normal((1,) + tuple(shape[1:])).astype(np.float32)]
        return dict(model=model, input_names=["input"], output_names=[classes_out], inputs=[x], extra=extra,
                    dynamic_axes={"input": {0: "batch"}, classes_out: {0: "batch"}})
    return make


def make_mlp(size, rng):
    dims, batch = ((64, 128, 128, 10), 4) if size == "test" else ((1024, 4096, 4096, 1000), 1)
    x = rng.standard_normal((batch, dims[0])).astype(np.float32)
    extra = [rng.standard_normal((1, dims[0])).astype(np.float32)] if size == "test" else None
    return dict(model=MLP(dims), input_names=["x"], output_names=["y"], inputs=[x], extra=extra,
                dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})


def bert_inputs(rng, vocab, batch, seq):
    ids = rng.integers(0, vocab, (batch, seq), dtype=np.int64)
    mask = np.ones((batch, seq), dtype=np.int64)
    for b in range(1, batch):  # later rows are padded
        mask[b, seq - (b * seq) // (2 * batch) - 1:] = 0
    types = np.zeros((batch, seq), dtype=np.int64)
    types[:, seq // 2:] = 1
    return [ids, mask, types]


def make_bert(size, rng):
    if size == "test":
        cfg = dict(vocab=1000, hidden=64, layers=2, heads=4, inter=256, max_pos=64)
        batch, seq, extra_shape = 2, 16, (1, 7)
    else:
        cfg = dict(vocab=30522, hidden=768, layers=12, heads=12, inter=3072, max_pos=512)
        batch, seq, extra_shape = 1, 128, None
    inputs = bert_inputs(rng, cfg["vocab"], batch, seq)
    extra = bert_inputs(rng, cfg["vocab"], *extra_shape) if extra_shape else None
    dyn = {n: {0: "batch", 1: "sequence"} for n in ("input_ids", "attention_mask", "token_type_ids", "last_hidden_state")}
    dyn["pooler_output"] = {0: "batch"}
    return dict(model=Bert(**cfg), input_names=["input_ids", "attention_mask", "token_type_ids"],
                output_names=["last_hidden_state", "pooler_output"], inputs=inputs, extra=extra,
                dynamic_axes=dyn, transformer=True)


def make_gpt2(size, rng):
    if size == "test":
        cfg = dict(vocab=1000, hidden=64, layers=2, heads=4, ctx=128)
        batch, seq, extra_shape = 2, 12, (1, 5)
    else:
        cfg = dict(vocab=50257, hidden=768, layers=12, heads=12, ctx=1024)
        batch, seq, extra_shape = 1, 64, None
    ids = rng.integers(0, cfg["vocab"], (batch, seq), dtype=np.int64)
    extra = [rng.integers(0, cfg["vocab"], extra_shape, dtype=np.int64)] if extra_shape else None
    return dict(model=GPT2(**cfg), input_names=["input_ids"], output_names=["logits"], inputs=[ids], extra=extra,
                dynamic_axes={"input_ids": {0: "batch", 1: "sequence"}, "logits": {0: "batch", 1: "sequence"}},
                transformer=True)


T = "test"
FAMILIES = collections.OrderedDict([
    ("mlp", make_mlp),
    ("resnet18", image_family(lambda s: ResNet18((8, 16, 32, 64), 10) if s == T else ResNet18(),
                              (2, 3, 64, 64), (1, 3, 224, 224))),
    ("mobilenetv2", image_family(lambda s: MobileNetV2(0.25, 10) if s == T else MobileNetV2(),
                                 (2, 3, 64, 64), (1, 3, 224, 224))),
    ("mobilenetv3-small", image_family(lambda s: MobileNetV3Small(0.25, 10) if s == T else MobileNetV3Small(),
                                       (2, 3, 64, 64), (1, 3, 224, 224))),
    ("squeezenet", image_family(lambda s: SqueezeNet(4, 10) if s == T else SqueezeNet(),
                                (2, 3, 64, 64), (1, 3, 224, 224))),
    ("shufflenet", image_family(lambda s: ShuffleNetV2((8, 16, 32, 64, 128), (2, 2, 2), 10) if s == T else ShuffleNetV2(),
                                (2, 3, 64, 64), (1, 3, 224, 224))),
    ("efficientnet", image_family(lambda s: EfficientNet(0.25, 1, 10) if s == T else EfficientNet(),
                                  (2, 3, 64, 64), (1, 3, 224, 224))),
    ("unet", image_family(lambda s: UNet(base=8, depth=3) if s == T else UNet(base=32, depth=4),
                          (1, 3, 32, 32), (1, 3, 256, 256), classes_out="mask")),
    ("bert", make_bert),
    ("gpt2", make_gpt2),
])
BENCH_DEFAULT = ["resnet18", "mobilenetv2", "bert", "gpt2", "mlp"]

# ---------------------------------------------------------------------------------------------


def op_histogram(model_proto):
    hist = collections.Counter()

    def walk(graph):
        for n in graph.node:
            hist[n.op_type] += 1
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    walk(a.g)
                for g in a.graphs:
                    walk(g)
    walk(model_proto.graph)
    return dict(sorted(hist.items(), key=lambda kv: (-kv[1], kv[0])))


def ort_session(path):
    import onnxruntime as ort
    so = ort.SessionOptions()
    # References follow the graph as written (no fused kernels, no layout changes).
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 1
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def tensor_entry(name, file, arr):
    return {"name": name, "file": file, "shape": list(arr.shape), "dtype": str(arr.dtype)}


def generate(name, size, out_dir, seed):
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    spec = FAMILIES[name](size, rng)
    model = init_weights(spec["model"], seed, spec.get("transformer", False))
    fam_dir = os.path.join(out_dir, name)
    os.makedirs(fam_dir, exist_ok=True)
    path = os.path.join(fam_dir, "model.onnx")
    inputs = spec["inputs"]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and shape-inference chatter
        torch.onnx.export(model, tuple(torch.from_numpy(x) for x in inputs), path, opset_version=OPSET,
                          input_names=spec["input_names"], output_names=spec["output_names"],
                          dynamic_axes=spec["dynamic_axes"], do_constant_folding=True)
    proto = onnx.load(path)
    onnx.checker.check_model(proto)
    sess = ort_session(path)
    entry = {"name": name, "model": f"{name}/model.onnx", "rtol": RTOL, "atol": ATOL,
             "params": int(sum(p.numel() for p in model.parameters())),
             "bytes": os.path.getsize(path), "ops": op_histogram(proto), "cases": []}
    cases = [("", inputs)] + ([("case1_", spec["extra"])] if spec.get("extra") else [])
    for prefix, xs in cases:
        feeds = dict(zip(spec["input_names"], xs))
        outs = sess.run(spec["output_names"], feeds)
        with torch.no_grad():  # the export must agree with torch, else the family itself is wrong
            ref = model(*(torch.from_numpy(x) for x in xs))
        ref = [ref] if isinstance(ref, torch.Tensor) else list(ref)
        for o, r in zip(outs, ref):
            # Absolute tolerance grows with the output's scale: the bench-size models' logits reach
            # 1e3, where two float32 libraries summing in different orders differ by 1e-3 in a
            # logit near zero.
            r = r.numpy()
            atol = max(1e-4, 1e-5 * float(np.abs(r).max(initial=0.0)))
            np.testing.assert_allclose(o, r, rtol=1e-3, atol=atol, err_msg=f"{name}: onnxruntime vs torch")
        case = {"inputs": [], "outputs": []}
        for i, (n, x) in enumerate(zip(spec["input_names"], xs)):
            f = f"{name}/{prefix}input_{i}.npy"
            np.save(os.path.join(out_dir, f), x)
            case["inputs"].append(tensor_entry(n, f, x))
        for j, (n, y) in enumerate(zip(spec["output_names"], outs)):
            f = f"{name}/{prefix}output_{j}.npy"
            np.save(os.path.join(out_dir, f), y)
            case["outputs"].append(tensor_entry(n, f, y))
            case["outputs"][-1]["abs_mean"] = float(np.abs(y).mean())
        entry["cases"].append(case)
    entry["inputs"] = entry["cases"][0]["inputs"]
    entry["outputs"] = entry["cases"][0]["outputs"]
    return entry


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", nargs="?")
    ap.add_argument("--size", choices=["test", "bench"], default="test")
    ap.add_argument("--families", default="", help="comma-separated subset (default: all)")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--list", action="store_true", help="print the family names and exit")
    ap.add_argument("--quiet", action="store_true", help="no op histograms")
    ap.add_argument("--merge", action="store_true",
                    help="keep the other families of an existing OUT_DIR/manifest.json of the same size and seed")
    args = ap.parse_args()
    if args.list:
        print("\n".join(FAMILIES))
        return 0
    if not args.out_dir:
        ap.error("OUT_DIR is required")
    names = [n for n in args.families.split(",") if n] or list(FAMILIES)
    unknown = [n for n in names if n not in FAMILIES]
    if unknown:
        ap.error(f"unknown families: {', '.join(unknown)} (known: {', '.join(FAMILIES)})")
    torch.set_num_threads(1)
    os.makedirs(args.out_dir, exist_ok=True)
    import onnxruntime
    manifest = {"size": args.size, "opset": OPSET, "seed": args.seed, "rtol": RTOL, "atol": ATOL,
                "generator": {"script_sha256": hashlib.sha256(open(__file__, "rb").read()).hexdigest(),
                              "torch": torch.__version__, "onnx": onnx.__version__,
                              "onnxruntime": onnxruntime.__version__, "numpy": np.__version__},
                "families": []}
    for name in names:
        t0 = time.time()
        entry = generate(name, args.size, args.out_dir, args.seed + list(FAMILIES).index(name))
        manifest["families"].append(entry)
        shapes = " ".join(f"{i['name']}{i['shape']}" for i in entry["inputs"])
        print(f"{name:18s} {entry['params']:>11,d} params {entry['bytes'] / 1e6:8.2f} MB  {shapes}  "
              f"({time.time() - t0:.1f} s)", flush=True)
        if not args.quiet:
            print("    ops: " + ", ".join(f"{op} {n}" for op, n in entry["ops"].items()))
    manifest_path = os.path.join(args.out_dir, "manifest.json")
    if args.merge and os.path.exists(manifest_path):
        with open(manifest_path) as f:
            old = json.load(f)
        if old.get("size") == args.size and old.get("seed") == args.seed and old.get("opset") == OPSET:
            kept = [e for e in old["families"] if e["name"] not in names]
            manifest["families"] = sorted(kept + manifest["families"], key=lambda e: list(FAMILIES).index(e["name"]))
    with open(manifest_path, "w") as f:
        json.dump(manifest, f, indent=1)
    print(f"wrote {len(names)} families to {args.out_dir}/manifest.json (opset {OPSET}, {args.size} size)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
