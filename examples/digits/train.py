#!/usr/bin/env python3
"""Trains the bundled digit classifier and rewrites its committed outputs.

Data: scikit-learn's 8x8 handwritten digits (sklearn.datasets.load_digits, shipped with the
package, no download): 1797 images, pixel values 0..16, scaled here to 0..1 (divided by 16).
Model: an MLP 64 -> 64 (ReLU) -> 10, trained with Adam, seeded, on a 75/25 stratified split.

Writes beside this file:
  digits.onnx               input "pixels" float32 [batch, 64], output "logits" float32 [batch, 10]
  sample_0.npy..sample_4.npy one test image each, float32 [1, 64]; sample_k shows the digit k
  batch.npy                 eight test images, float32 [8, 64]
and prints the test accuracy and the expected label of every sample (also in README.md).

Run with the project's test environment: .venv/bin/python examples/digits/train.py
(needs torch, scikit-learn, numpy, onnx; onnxruntime, when present, checks the export).
"""
import os
import sys

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 0
OPSET = 13


class DigitMLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(64, 64)
        self.fc2 = torch.nn.Linear(64, 10)

    def forward(self, pixels):
        return self.fc2(torch.relu(self.fc1(pixels)))


def main():
    torch.manual_seed(SEED)
    np.random.seed(SEED)
    torch.set_num_threads(1)

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=SEED, stratify=y)

    model = DigitMLP()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-4)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    gen = torch.Generator().manual_seed(SEED)
    for _epoch in range(60):
        perm = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), 64):
            idx = perm[i:i + 64]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
    model.eval()

    with torch.no_grad():
        test_logits = model(torch.from_numpy(x_test)).numpy()
    accuracy = float((test_logits.argmax(1) == y_test).mean())
    print(f"test accuracy: {accuracy * 100:.2f}% ({len(y_test)} images)")

    onnx_path = os.path.join(HERE, "digits.onnx")
    torch.onnx.export(model, torch.from_numpy(x_test[:1]), onnx_path, opset_version=OPSET,
                      input_names=["pixels"], output_names=["logits"],
                      dynamic_axes={"pixels": {0: "batch"}, "logits": {0: "batch"}},
                      do_constant_folding=True)

    # sample_k.npy is the first test image whose true label is k (k = 0..4).
    sample_idx = [int(np.flatnonzero(y_test == k)[0]) for k in range(5)]
    for k, i in enumerate(sample_idx):
        np.save(os.path.join(HERE, f"sample_{k}.npy"), np.ascontiguousarray(x_test[i:i + 1], dtype=np.float32))
    batch = np.ascontiguousarray(x_test[:8], dtype=np.float32)
    np.save(os.path.join(HERE, "batch.npy"), batch)

    pred = test_logits.argmax(1)
    for k, i in enumerate(sample_idx):
        print(f"sample_{k}.npy: predicted {pred[i]} (true label {y_test[i]}, test image {i})")
    print(f"batch.npy: predicted {' '.join(str(int(p)) for p in pred[:8])} (true {' '.join(str(int(t)) for t in y_test[:8])})")

    try:
        import onnxruntime as ort
    except ImportError:
        print("onnxruntime not installed: export not checked", file=sys.stderr)
        return
    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    ort_logits = sess.run(["logits"], {"pixels": x_test})[0]
    np.testing.assert_allclose(ort_logits, test_logits, rtol=1e-4, atol=1e-5)
    ort_acc = float((ort_logits.argmax(1) == y_test).mean())
    print(f"onnxruntime {ort.__version__}: max |diff| {np.abs(ort_logits - test_logits).max():.2e}, accuracy {ort_acc * 100:.2f}%")
    print(f"digits.onnx: {os.path.getsize(onnx_path)} bytes")


if __name__ == "__main__":
    main()
