"""What AuxK (nbs/08b) adds to a training step: time of `Trainer.train_step` with `auxk_alpha` > 0 and half of the
latents dead, over the same step without AuxK, in the same process (interleaved repeats, median ratio).

    OMP_NUM_THREADS=1 python benchmarks/auxk_cost.py [--device cpu|cuda] [--repeats 5] [--steps 10]
"""
import argparse, statistics, time
import torch
from switch_sae.config import SwitchSAEConfig
from switch_sae.train import Trainer

SHAPES = [  # (arch, d_in, n_latents, n_experts, k, batch): the shapes of results/tiny_lm_repro's models
    ("topk", 128, 1024, 1, 16, 2048), ("switch", 128, 1024, 16, 16, 2048), ("switch", 128, 16384, 16, 16, 2048)]


def seconds_per_step(cfg, x, steps: int, dead: bool) -> float:
    tr = Trainer(cfg)
    tr.train_step(x)                                       # step 0: biases and scale
    g = torch.Generator().manual_seed(0)                   # half of the latents (random ones) silent for dead_tokens tokens
    pattern = ((torch.rand(len(tr.tokens_since_fired), generator=g) < 0.5).long() * cfg.dead_tokens * dead).to(x.device)
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)
    sync(); t0 = time.perf_counter()
    for _ in range(steps):
        tr.tokens_since_fired.copy_(pattern)               # the same dead latents at every step (both runs pay the copy)
        tr.train_step(x)
    sync()
    return (time.perf_counter() - t0) / steps


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu"); p.add_argument("--repeats", type=int, default=5); p.add_argument("--steps", type=int, default=10)
    a = p.parse_args()
    print("| model | step without AuxK (ms) | with AuxK, half the latents dead (ms) | ratio |\n|---|---|---|---|")
    for arch, d, N, E, k, B in SHAPES:
        kw = dict(d_in=d, n_latents=N, n_experts=E, k=k, arch=arch, batch_size=B, steps=10**6, log_every=10**6,
                  dead_tokens=1000, device=a.device)
        x = torch.randn(B, d, device=a.device)
        base, aux = [], []
        for _ in range(a.repeats):   # interleaved, so that a load change on the machine hits both
            base.append(seconds_per_step(SwitchSAEConfig(**kw), x, a.steps, False))
            aux.append(seconds_per_step(SwitchSAEConfig(**kw, auxk_alpha=1 / 32), x, a.steps, True))
        b, m = statistics.median(base), statistics.median(aux)
        name = "dense TopK" if arch == "topk" else f"Switch E={E}"
        print(f"| {name}, N = {N}, k = {k}, batch {B} | {b * 1e3:.1f} | {m * 1e3:.1f} | {m / b:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
