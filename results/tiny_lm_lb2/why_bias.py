"""Why the routing bias costs quality on the tiny LM (results/tiny_lm_lb2): the grid's bias run (bias_rate 1e-3,
lb_alpha 0) and its default loss run (lb_alpha 0.1), trained again as the lb2 grid trains them, then taken apart on
the held-out tokens: how many tokens the bias sends to an expert other than the router's first choice, the gate
those tokens get, and how well they are reconstructed. Writes why_bias.md beside this script.

    OMP_NUM_THREADS=1 python results/tiny_lm_lb2/why_bias.py [--cache runs/sweep_cache/tiny_blocks.1.hook_resid_pre_stdlib]

About 5 minutes on one CPU thread (the activation cache is built first if it is missing). --steps, --batch-size,
--eval-tokens, --n-ctxs and --out shrink it for a test.
"""
import argparse, dataclasses, platform, time
from pathlib import Path
import torch
from switch_sae.activations import ActivationConfig
from switch_sae.sweep import GRIDS, RunSpec, SweepData
from switch_sae.train import train

HERE = Path(__file__).resolve().parent


def held_out_acts(data: SweepData) -> torch.Tensor:
    "The hook's activations on the held-out contexts, BOS dropped: [tokens, d]."
    out, hook = [], data.act.hook_name
    with torch.no_grad():
        for ctx in data.held_out.split(16):
            _, cache = data.lm.model.run_with_cache(ctx, names_filter=hook)
            out.append(cache[hook][:, 1:].reshape(-1, data.d))
    return torch.cat(out)


def take_apart(sae, x: torch.Tensor) -> dict:
    "Per held-out token: its first choice, the expert it went to, its gate and squared error (in the SAE's units)."
    with torch.no_grad():
        xs = sae.scale_in(x)
        out = sae(x)
        err = (xs - out.x_hat * sae.act_scale).pow(2).sum(-1)
        probs, expert = out.enc.router_probs, out.enc.expert
        first = probs.argmax(-1)
        gate = probs.gather(1, expert[:, None])[:, 0]
    moved = expert != first
    def mean(t, m): return t[m].mean().item() if m.any() else float("nan")
    return dict(moved=moved.float().mean().item(), gate_kept=mean(gate, ~moved), gate_moved=mean(gate, moved),
                first_p_moved=mean(probs.max(-1).values, moved), err_kept=mean(err, ~moved), err_moved=mean(err, moved),
                mse=err.mean().item(), max_load=(torch.bincount(expert, minlength=sae.n_experts).max().item() * sae.n_experts / len(x)))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cache", default="runs/sweep_cache/tiny_blocks.1.hook_resid_pre_stdlib")
    g = GRIDS["lb2"]
    for flag in ("steps", "batch_size", "eval_tokens", "n_ctxs"):
        p.add_argument("--" + flag.replace("_", "-"), type=int, default=g[flag], help=f"default: the lb2 grid's, {g[flag]}")
    p.add_argument("--out", default=str(HERE / "why_bias.md"))
    a = p.parse_args()
    torch.set_num_threads(1)
    g = dict(g, steps=a.steps, batch_size=a.batch_size, eval_tokens=a.eval_tokens, n_ctxs=a.n_ctxs)
    act = dataclasses.replace(ActivationConfig(n_ctxs=g["n_ctxs"]), batch_size=g["batch_size"], device="cpu", seed=0)
    data = SweepData(act, a.cache, g["steps"] * g["batch_size"], g["eval_tokens"])
    x = held_out_acts(data)
    runs = {"loss (lb_alpha 0.1)": RunSpec("switch", g["width_mult"] * data.d, g["focus_E"], g["focus_k"], lb_alpha=0.1),
            "bias (bias_rate 1e-3, lb_alpha 0)": RunSpec("switch", g["width_mult"] * data.d, g["focus_E"], g["focus_k"], lb_alpha=0.0,
                                                         balance="bias", bias_rate=1e-3)}
    res, t0 = {}, time.time()
    for name, spec in runs.items():
        cfg = spec.sae_config(data.d, steps=g["steps"], batch_size=g["batch_size"], seed=0, device="cpu", ckpt_every=0,
                              log_every=100, **dict(g["train_kw"], scale_batches=min(g["train_kw"]["scale_batches"], g["steps"])))
        res[name] = take_apart(train(cfg, data.batches, progress=False).model, x)
        print(name, {k: round(v, 4) for k, v in res[name].items()})
    b, lo = res["bias (bias_rate 1e-3, lb_alpha 0)"], res["loss (lb_alpha 0.1)"]
    share = b["moved"] * b["err_moved"] / (b["moved"] * b["err_moved"] + (1 - b["moved"]) * b["err_kept"])
    lines = ["# Why the routing bias costs quality here", "",
             f"Made by `OMP_NUM_THREADS=1 python results/tiny_lm_lb2/why_bias.py` ({time.time() - t0:.0f} s, "
             f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}): "
             "the lb2 grid's bias run and its default loss run "
             f"(E = {g['focus_E']}, k = {g['focus_k']}, N = {g['width_mult'] * data.d}, {g['steps'] * g['batch_size']:,} tokens), "
             f"trained again and taken apart on {len(x):,} held-out tokens. A token is *moved* when the bias sends it to an "
             "expert other than the router's first choice; its gate is then that expert's (smaller) probability. Errors are in "
             "the SAE's units (the sweep CSV's MSE is in raw units, act_scale squared times smaller).", "",
             "| run | tokens moved | gate, kept | gate, moved | first choice's p, moved | squared error, kept "
             "| squared error, moved | MSE | max load x E |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in res.items():
        f = lambda v, fmt: "-" if v != v else fmt.format(v)   # noqa: E731 (nan: no token moved)
        lines.append(f"| {name} | {r['moved']:.1%} | {f(r['gate_kept'], '{:.3f}')} | {f(r['gate_moved'], '{:.3f}')} | "
                     f"{f(r['first_p_moved'], '{:.3f}')} | {f(r['err_kept'], '{:.2f}')} | {f(r['err_moved'], '{:.2f}')} | "
                     f"{r['mse']:.2f} | {r['max_load']:.2f} |")
    lines += ["", f"With the bias, {b['moved']:.1%} of the tokens are moved; their gate averages {b['gate_moved']:.3f} against "
              f"{b['gate_kept']:.3f} for the kept ones, and their squared error is {b['err_moved'] / b['err_kept']:.2f} times the kept "
              f"tokens' ({share:.0%} of the bias run's error). The kept tokens alone have a squared error of {b['err_kept']:.2f}, against "
              f"the loss run's MSE of {lo['mse']:.2f}: "
              + ("the moved tokens explain the gap (the kept ones are within 3% of the loss run or better)"
                 if b["err_kept"] <= 1.03 * lo["mse"] else
                 "the moved tokens do not explain all of the gap; the kept tokens are worse reconstructed too") + "."]
    Path(a.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
