"""Is the FLOP-matched Switch SAE held back by the paper's learning-rate rule (lr ~ 1/sqrt(N))?
Trains the full grid's FLOP-matched Switch SAE (E = 16, k = 32, N = 16 * 2048) on the sweep's cached tiny-LM
activations twice: with the paper's lr for its N, and with the dense baseline's lr (N = 2048); prints both beside
the dense TopK SAE, all three trained here, in one process, on the same batches.
Usage: python benchmarks/flop_matched_lr.py [--steps 2000] [--threads 2] [--eval-tokens 16384] [--n-ctxs 256]
(the cache is written under runs/sweep_cache/ of the current folder, reused when it holds enough tokens)."""
import argparse, dataclasses, torch
from switch_sae.activations import ActivationConfig
from switch_sae.sweep import GRIDS, RunSpec, SweepData
from switch_sae.train import train

p = argparse.ArgumentParser(); p.add_argument("--steps", type=int, default=GRIDS["full"]["steps"])
p.add_argument("--threads", type=int, default=2)
g = GRIDS["full"]
p.add_argument("--eval-tokens", type=int, default=g["eval_tokens"]); p.add_argument("--n-ctxs", type=int, default=g["n_ctxs"])
a = p.parse_args()
torch.set_num_threads(a.threads)
bs = g["batch_size"]
act = ActivationConfig(n_ctxs=a.n_ctxs, batch_size=bs, device="cpu", seed=0)
data = SweepData(act, "runs/sweep_cache/" + f"{act.model}_{act.hook_name}_{act.dataset}".replace("/", "_"),
                 a.steps * bs, a.eval_tokens)
base = g["width_mult"] * data.d
dense = RunSpec("topk", base, 1, 32).sae_config(data.d, steps=a.steps, batch_size=bs, device="cpu", ckpt_every=0)
flop = RunSpec("switch", 16 * base, 16, 32).sae_config(data.d, steps=a.steps, batch_size=bs, device="cpu", ckpt_every=0)
for name, cfg in [("dense TopK, N=%d" % base, dense), ("Switch E=16, N=%d, paper lr" % flop.n_latents, flop),
                  ("Switch E=16, N=%d, dense lr" % flop.n_latents, dataclasses.replace(flop, lr=dense.lr_value))]:
    m = data.evaluate(train(cfg, data.batches, progress=False).model)
    print(f"{name:36s} lr {cfg.lr_value:.2e}: fve {m['fve']:.4f}, mse {m['mse']:.3f}, "
          f"loss recovered {m['ce_loss_recovered']:.4f}", flush=True)
