"""Training and inference clips per second of PSGCN and the multi-modal model; prints the device.

Run: ``python bench/bench_train.py [--device cuda] [--frames 256] [--steps 2] [--models psgcn]``.
Inputs are random tensors of the data layouts (skeleton (N, 3, T, 16), appearance (N, T, D)) at
the paper's sizes: batch 8, T = 256 at 25 fps (:class:`models.data.DataConfig`), holistic 2,048-d,
facial and scenic 512-d at T / 8. One warm-up step, then ``--steps`` timed steps; a training
step is forward, MSE, backward and an Adam update. The default run takes about a minute on two
busy CPU cores; on a GPU use ``--steps 20`` for stable figures.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    import torch

    from models import build_model
    from models.train import pick_device

    p = argparse.ArgumentParser()
    p.add_argument("--device", default="auto")
    p.add_argument("--frames", type=int, default=256)
    p.add_argument("--steps", type=int, default=2, help="timed steps per model and mode (after one warm-up)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--models", default="psgcn,multimodal", help="comma-separated: psgcn, multimodal")
    a = p.parse_args()
    dev = pick_device(a.device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"device: {name}; torch {torch.__version__}")
    n, t = a.batch, a.frames
    sk = (torch.randn(n, 3, t, 16, device=dev), torch.ones(n, t, dtype=torch.bool, device=dev))
    inputs = {"pose": sk}
    for m, d in (("holistic", 2048), ("facial", 512), ("scenic", 512)):
        tm = t if m == "holistic" else max(8, t // 8)
        inputs[m] = (torch.randn(n, tm, d, device=dev), torch.ones(n, tm, dtype=torch.bool, device=dev))
    for model_name in a.models.split(","):
        model = build_model(model_name).to(dev)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        y = torch.rand(n, device=dev)

        def run(train: bool, model=model, model_name=model_name, opt=opt, y=y):
            out = model(*sk) if model_name == "psgcn" else model(inputs)
            if train:
                loss = torch.nn.functional.mse_loss(out.score, y)
                opt.zero_grad()
                loss.backward()
                opt.step()

        for train in (True, False):
            model.train(train)
            with torch.set_grad_enabled(train):
                run(train)  # warm-up
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                for _ in range(a.steps):
                    run(train)
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                dt = time.perf_counter() - t0
            print(
                f"{model_name:10s} {'train' if train else 'infer'}: {a.steps * n / dt:8.1f} clips/s (T={t}, batch {n})"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
