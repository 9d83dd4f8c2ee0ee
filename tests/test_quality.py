"""Issue 22's remedies (nbs/08b_dead_latents_and_balance.ipynb): AuxK revives dead latents, the routing bias restores
balance without a loss, both resume bit-exactly and run expert-parallel, `act_scale` from many batches resumes exactly,
and two processes that build one activation cache at once both finish (the second waits)."""
import multiprocessing as mp, os, signal, subprocess, sys, time
from pathlib import Path
import pytest
import torch
from switch_sae.config import SwitchSAEConfig
from switch_sae.data import SyntheticConfig, SyntheticData
from switch_sae.train import build_sae, train
from switch_sae.activations import ActivationConfig, CachedActivations, cache_activations
from switch_sae import distributed as D

ROOT = Path(__file__).resolve().parents[1]


def _crippled_run(arch: str, auxk_alpha: float):
    "Half of each expert's latents start with encoder rows 20x too short: they lose every TopK and stay dead unless helped."
    data = SyntheticData(SyntheticConfig(d_in=32, n_clusters=4, features_per_cluster=16))
    cfg = SwitchSAEConfig(d_in=32, n_latents=128, n_experts=4 if arch == "switch" else 1, k=4, arch=arch, steps=400,
                          log_every=50, dead_tokens=2560, auxk_alpha=auxk_alpha, lr=3e-3, device="cpu", dead_warn_frac=1.0)
    sae = build_sae(cfg)
    with torch.no_grad():
        M = cfg.expert_size
        for e in range(cfg.n_experts): sae.W_enc[e * M + M // 2:(e + 1) * M] *= 0.05
    return train(cfg, list(data.batches(256, seed=1, n_batches=400)), progress=False, model=sae)


@pytest.mark.parametrize("arch", ["topk", "switch"])
def test_auxk_revives_latents_plain_training_leaves_dead(arch):
    plain, auxk = _crippled_run(arch, 0.0), _crippled_run(arch, 1 / 32)
    # measured: topk 0.51 -> 0.39, switch 0.51 -> 0.26 (dead fraction at the end); L2 2.29 -> 1.61, 3.78 -> 2.61
    assert plain.dead_frac() >= 0.45
    assert auxk.dead_frac() <= plain.dead_frac() - 0.1
    assert auxk.history[-1]["l2"] < 0.9 * plain.history[-1]["l2"]


def _skewed(n: int, seed: int = 0, B: int = 256):
    "Batches from 4 clusters, 70% of the tokens from the first: the router's natural choice is very uneven."
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(4, 16, generator=g) * 3
    out = []
    for _ in range(n):
        c = torch.multinomial(torch.tensor([0.7, 0.1, 0.1, 0.1]), B, replacement=True, generator=g)
        out.append(mu[c] + torch.randn(B, 16, generator=g))
    return out


def test_bias_restores_balance_without_a_loss():
    xs = _skewed(300)
    kw = dict(d_in=16, n_latents=64, n_experts=4, k=4, lb_alpha=0.0, steps=300, log_every=50, device="cpu", collapse_share=0.0)
    loss = train(SwitchSAEConfig(**kw), xs, progress=False)
    bias = train(SwitchSAEConfig(**kw, balance="bias", bias_rate=1e-2), xs, progress=False)
    last = lambda tr: max(tr.history[-1]["expert_load"]) * 4
    # measured: 4.00 (every token to one expert) without, 1.02 with
    assert last(loss) > 3 and last(bias) < 1.2
    assert bias.model.expert_bias.abs().max() > 0


class Interrupting:
    "The stream `start -> batches[start:]`; its first iterator sends this process a Ctrl-C when it hands out batch `stop`."
    def __init__(self, batches, stop): self.batches, self.stop, self.calls = batches, stop, 0
    def __call__(self, start):
        self.calls += 1
        if self.calls > 1: return iter(self.batches[start:])   # later passes (the act_scale estimate, a resumed run)
        def first():
            for i, x in enumerate(self.batches[start:], start):
                if i == self.stop: os.kill(os.getpid(), signal.SIGINT)   # the trainer stops cleanly after this step
                yield x
        return first()


def _resume_case(tmp_path, cfg, batches, stop: int):
    "(uninterrupted trainer, resumed trainer): the second stopped by Ctrl-C near `stop`, then resumed."
    full = train(cfg, lambda s: batches[s:], out=tmp_path / "full", progress=False)
    cut = train(cfg, Interrupting(batches, stop), out=tmp_path / "cut", progress=False)
    assert cut.interrupted and cut.step < cfg.steps
    resumed = train(cfg, lambda s: batches[s:], out=tmp_path / "cut", resume=True, progress=False)
    return full, resumed


@pytest.mark.parametrize("arch,balance", [("switch", "both"), ("topk", "loss")])
def test_auxk_and_bias_resume_bit_exactly(tmp_path, arch, balance):
    cfg = SwitchSAEConfig(d_in=16, n_latents=64, n_experts=4 if arch == "switch" else 1, k=4, arch=arch, steps=40,
                          log_every=10, ckpt_every=10, dead_tokens=512, auxk_alpha=1 / 32, balance=balance, bias_rate=1e-2,
                          scale_batches=5, device="cpu")
    full, resumed = _resume_case(tmp_path, cfg, _skewed(40), 25)
    assert resumed.step == full.step == 40
    for k, v in full.model.state_dict().items(): assert torch.equal(v, resumed.model.state_dict()[k]), k
    assert torch.equal(full.tokens_since_fired, resumed.tokens_since_fired)
    assert full.dead_frac() > 0   # AuxK had dead latents to work on
    if arch == "switch": assert full.model.expert_bias.abs().max() > 0


def test_resumed_act_scale_equals_the_uninterrupted_one(tmp_path):
    xs = [x * (1 + i) for i, x in enumerate(_skewed(12))]   # every batch a different scale: the estimate must use 8 of them
    cfg = SwitchSAEConfig(d_in=16, n_latents=64, n_experts=4, k=4, steps=12, log_every=4, ckpt_every=4, scale_batches=8,
                          device="cpu")
    full, resumed = _resume_case(tmp_path, cfg, xs, 6)
    want = (16 / torch.cat(xs[:8]).double().pow(2).sum(-1).mean()).sqrt().item()
    assert full.model.act_scale.item() == pytest.approx(want, rel=1e-6)
    assert torch.equal(full.model.act_scale, resumed.model.act_scale)
    for k, v in full.model.state_dict().items(): assert torch.equal(v, resumed.model.state_dict()[k]), k


def _ep_cfg(**kw):
    return SwitchSAEConfig(**{**dict(d_in=16, n_latents=128, n_experts=8, k=4, dtype="float64", batch_size=64, steps=8,
                                     log_every=2, grad_clip=0.5, lb_alpha=0.01, dead_tokens=128, auxk_alpha=0.25,
                                     balance="both", bias_rate=1e-2, scale_batches=4, device="cpu"), **kw})


def _ep_batches(cfg, seed=0):
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(4, cfg.d_in, generator=g, dtype=torch.float64) * 3
    return [(mu[torch.randint(4, (cfg.batch_size,), generator=g)] * (1 + i / 4)
             + torch.randn(cfg.batch_size, cfg.d_in, generator=g, dtype=torch.float64)) for i in range(cfg.steps)]


def test_expert_parallel_matches_one_process_with_auxk_and_bias(tmp_path):
    cfg = _ep_cfg()
    batches = _ep_batches(cfg)
    single = train(cfg, lambda s: batches[s:], progress=False)
    res = D.train_local(cfg, batches, 2)
    sd = single.model.state_dict()
    for r in res:
        err = {k: (r["state"][k] - v).abs().max().item() / max(v.abs().max().item(), 1e-30) for k, v in sd.items()}
        assert max(err.values()) < 1e-10, err
    assert single.dead_frac() > 0 and single.model.expert_bias.abs().max() > 0   # both remedies were at work
    assert res[0]["bytes"]["fwd_aux"] > 0                                         # AuxK's codes travelled back
    # a run stopped at step 4 and resumed over 2 processes ends bit-exactly where the uninterrupted one does
    D.train_local(cfg, batches[:4], 2, tmp_path / "cut")
    whole = D.train_local(cfg, batches, 2, tmp_path / "whole")
    resumed = D.train_local(cfg, batches, 2, tmp_path / "cut", resume=True)
    for k, v in whole[0]["state"].items(): assert torch.equal(v, resumed[0]["state"][k]), k


class SlowStore:
    "A stand-in for `ActivationStore`: 42 contexts of 4 tokens (d = 8), handed out slowly; then the text ends."
    def __init__(self):
        self.cfg = ActivationConfig(ctx_len=4, prepend_bos=False, batch_size=8)
        self.tokens_per_ctx, self.d_model = 4, 8
    def batches(self):
        for i in range(42):
            time.sleep(0.01)
            yield torch.full((1, 4), i), torch.arange(32, dtype=torch.float32).reshape(4, 8) + 100 * i


def _build(path, q):
    import contextlib, io
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out): man = cache_activations(SlowStore(), path, 10_000, shard_tokens=32)
        q.put(("ok", man["n_tokens"], out.getvalue()))
    except BaseException as e: q.put(("error", f"{type(e).__name__}: {e}", out.getvalue()))


def test_two_processes_building_one_cache_both_finish(tmp_path):
    path = tmp_path / "cache"
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    first = ctx.Process(target=_build, args=(path, q)); first.start()
    t0 = time.time()
    while not (path / "acts_00000.npy").exists() and time.time() - t0 < 20: time.sleep(0.005)   # the first is writing
    second = ctx.Process(target=_build, args=(path, q)); second.start()
    for p in (first, second): p.join(60)
    res = [q.get(timeout=5) for _ in range(2)]
    assert [p.exitcode for p in (first, second)] == [0, 0]
    assert [r[:2] for r in res] == [("ok", 168), ("ok", 168)], res
    assert sum("waiting for another process" in r[2] for r in res) == 1   # the second waited, and said so
    c = CachedActivations(path, SlowStore().cfg)
    rows = torch.cat([torch.from_numpy(c.shard(i).copy()) for i in range(len(c.manifest["shards"]))])
    want = torch.cat([torch.arange(32, dtype=torch.float32).reshape(4, 8) + 100 * i for i in range(42)])
    assert torch.equal(rows, want)


def test_two_sweep_shards_started_together_both_run(tmp_path):
    "The silent exit of issue 22: two shards of a sweep started at once, on a cache neither has written yet."
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = lambda i: [sys.executable, "-m", "switch_sae.cli", "sweep", "--grid", "repro2-ci", "--out", str(tmp_path / "out"),
                     "--cache", str(tmp_path / "cache"), "--threads", "1", "--limit", "1", "--shard", f"{i}/2"]
    procs = [subprocess.Popen(cmd(i), cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    for i in range(2): assert (tmp_path / "out" / f"sweep-{i}of2.csv").exists(), outs[i]


def test_metrics_and_report_carry_the_training_counters_dead_fraction(tmp_path):
    out = tmp_path / "run"
    subprocess.run([sys.executable, "-m", "switch_sae.cli", "train", "--data", "synthetic", "--steps", "40", "--batch-size", "256",
                    "--log-every", "20", "--out", str(out), "--no-progress", "--device", "cpu", "--eval-tokens", "1024",
                    "--dead-tokens", "2000", "--auxk-alpha", "0.03", "--balance", "bias"],
                   cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, check=True, capture_output=True)
    import json
    m = json.loads((out / "metrics.json").read_text())
    per = m["dead_frac_train_by_expert"]
    assert len(per) == 8 and m["dead_frac_train"] == pytest.approx(sum(per) / 8)
    assert "| dead_frac_train |" in (out / "report.md").read_text()
    from switch_sae.checkpoint import load_sae
    assert load_sae(out).expert_bias.abs().max() > 0   # the routing bias came back with the model


def test_the_routing_bias_is_exported_or_refused(tmp_path):
    from switch_sae.switch import SwitchSAE
    from switch_sae.checkpoint import load_sae
    from switch_sae.interop import saelens_state_dict, saelens_config, save_reference, load_reference
    cfg = SwitchSAEConfig(d_in=16, n_latents=64, n_experts=4, k=4, balance="bias", device="cpu")
    sae = SwitchSAE(cfg)
    x = torch.randn(32, 16)
    save_reference(sae, tmp_path / "ref0")                       # a zero bias routes as the reference code does
    back, _ = load_reference(tmp_path / "ref0" / "ae.pt", tmp_path / "ref0" / "config.json")
    assert not hasattr(back, "expert_bias") and torch.equal(back(x).enc.expert, sae(x).enc.expert)
    with torch.no_grad(): sae.expert_bias.copy_(torch.tensor([0.0, 0.3, -0.2, 0.1]))
    with pytest.raises(ValueError, match="no routing bias"): save_reference(sae, tmp_path / "ref")
    sd, c = saelens_state_dict(sae), saelens_config(sae, "blocks.0.hook_resid_pre", "tiny")
    assert torch.equal(sd["expert_bias"], sae.expert_bias) and c["routing_bias"] is True
    sae.save_pretrained(tmp_path / "ours")
    again = load_sae(tmp_path / "ours")
    assert torch.equal(again.expert_bias, sae.expert_bias)
    assert torch.equal(again(x).enc.expert, sae(x).enc.expert)
