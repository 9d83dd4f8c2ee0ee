"""The fast paths compute what the plain ones do: sparse backward, grouped backends, bfloat16 autocast,
torch.compile; and the benchmark command writes what it says. Correctness only: no timing is asserted.

Bugs planted once to see these tests fail (2026-12-06, each in switch_sae/*.py, then reverted):
- autocast forced off in the trainer (`enabled=False` in `Trainer.__init__`): test_trainer_autocast_follows_float32
  (the bfloat16 run must differ from the float32 one, not only stay close to it);
- autocast forced off in `switch._grads`: test_bfloat16_autocast_agrees_with_reference_and_float32;
- torch.compile silently ignored (`self.forward = self.model`): test_trainer_compile_matches_eager (dynamo's counters);
- `keep_freed_memory` doing nothing but returning True: test_keep_freed_memory_keeps_freed_memory (page faults);
- the bench's latent MB of the Switch SAE computed for all N latents: test_bench_main_writes_json."""
import json, math, subprocess, sys
import pytest
import torch
from switch_sae.config import SwitchSAEConfig
from switch_sae.switch import SwitchSAE, SwitchReference, check_against_reference, _grads
from switch_sae.router import route, group_by_expert
from switch_sae.train import Trainer
from switch_sae.data import SyntheticData
from switch_sae import bench

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("backend", ["padded", "loop"])
@pytest.mark.parametrize("sparse_grad", [True, False])
@pytest.mark.parametrize("N,E,k,skew,heaviside", [(64, 4, 3, 0.0, False), (96, 8, 12, 8.0, True), (256, 32, 8, 30.0, False)])
def test_float64_equivalence(backend, sparse_grad, N, E, k, skew, heaviside):
    "Every backend and both backward passes give the reference's outputs and gradients to 1e-10."
    torch.manual_seed(N + E + k)
    cfg = SwitchSAEConfig(d_in=10, n_latents=N, n_experts=E, k=k, heaviside=heaviside, dtype="float64", device="cpu")
    x = torch.randn(70, 10, dtype=torch.float64) * 3 - 1
    load = check_against_reference(cfg, x, backend, skew, sparse_grad=sparse_grad)
    assert load.sum() == 70


@pytest.mark.parametrize("sparse_grad", [True, False])
def test_grouped_mm_float32(sparse_grad):
    cfg = SwitchSAEConfig(d_in=32, n_latents=512, n_experts=16, k=8, device="cpu")
    check_against_reference(cfg, torch.randn(200, 32), "grouped_mm", skew=4.0, atol=5e-4, sparse_grad=sparse_grad)


def test_sparse_and_dense_backward_agree_exactly_in_selection():
    "The two backward passes see the same forward: same latents, same values."
    cfg = SwitchSAEConfig(d_in=16, n_latents=128, n_experts=8, k=4, dtype="float64", device="cpu")
    x = torch.randn(40, 16, dtype=torch.float64)
    a, b = SwitchSAE(cfg, sparse_grad=True), SwitchSAE(cfg, sparse_grad=False)
    ea, eb = a.encode(x), b.encode(x)
    assert torch.equal(ea.top_indices.sort(-1).values, eb.top_indices.sort(-1).values)
    torch.testing.assert_close(ea.top_acts.sort(-1).values, eb.top_acts.sort(-1).values, rtol=0, atol=1e-12)


def test_empty_batch_and_all_tokens_to_one_expert():
    cfg = SwitchSAEConfig(d_in=8, n_latents=32, n_experts=4, k=2, dtype="float64", device="cpu")
    sae = SwitchSAE(cfg)
    out = sae(torch.zeros(0, 8, dtype=torch.float64))
    assert out.x_hat.shape == (0, 8)
    check_against_reference(cfg, torch.randn(30, 8, dtype=torch.float64), "padded", skew=1e3)   # all to one expert


def test_bfloat16_autocast_agrees_with_reference_and_float32():
    torch.manual_seed(3)
    cfg = SwitchSAEConfig(d_in=64, n_latents=1024, n_experts=16, k=16, device="cpu")
    x = torch.randn(256, 64)
    for backend in ("grouped_mm", "padded"):
        check_against_reference(cfg, x, backend, skew=1.0, autocast=torch.bfloat16, rtol=5e-2, act_scale=1.0)
    sae = SwitchSAE(cfg)
    o32, g32 = _grads(sae, sae, x)
    o16, g16 = _grads(sae, sae, x, torch.bfloat16)
    assert o16.total.dtype == torch.float32 and all(g.dtype == torch.float32 for g in g16.values())
    rel = lambda a, b: ((a - b).norm() / b.norm()).item()
    assert 1e-4 < rel(o16.x_hat, o32.x_hat) < 2e-2   # close, and not equal: bfloat16 really ran
    assert all(rel(g16[n], g32[n]) < 1e-1 for n in g32), {n: rel(g16[n], g32[n]) for n in g32}


def test_router_ignores_autocast():
    x, W, b = torch.randn(50, 16), torch.randn(8, 16), torch.randn(16)
    r = route(x, W, b)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ra = route(x, W, b)
    assert torch.equal(r.expert, ra.expert) and ra.probs.dtype == torch.float32


def test_group_counts_match_bincount():
    e = torch.randint(0, 7, (300,))
    assert torch.equal(group_by_expert(e, 9).counts, torch.bincount(e, minlength=9))


def _train(cfg, model=None, n=20, seed=0):
    data = SyntheticData()
    tr = Trainer(cfg, model)
    for x in data.batches(cfg.batch_size, n_batches=n, seed=seed): tr.train_step(x)
    return tr


@pytest.mark.parametrize("arch", ["switch", "topk", "reference"])
def test_trainer_autocast_follows_float32(arch):
    base = dict(steps=20, log_every=5, device="cpu", batch_size=256, n_latents=512, arch="topk" if arch == "topk" else "switch")
    runs = []
    for ac in (None, "bfloat16"):
        cfg = SwitchSAEConfig(**base, autocast=ac)
        runs.append(_train(cfg, SwitchReference(cfg) if arch == "reference" else None))
    f32, bf16 = runs
    assert bf16.model.W_enc.dtype == torch.float32
    l32, l16 = f32.history[-1]["l2"], bf16.history[-1]["l2"]
    assert math.isfinite(l16) and abs(l16 - l32) < 0.05 * l32, (l32, l16)
    # ... and autocast really ran: bfloat16 rounding changed every step's loss and the weights
    assert all(a["l2"] != b["l2"] for a, b in zip(f32.history, bf16.history)), "the bfloat16 run took float32's steps"
    assert not torch.equal(f32.model.W_enc, bf16.model.W_enc)


def test_trainer_reference_and_switch_take_the_same_steps():
    "In float64 the reference formulation and ours train to the same weights."
    base = dict(steps=5, log_every=5, device="cpu", batch_size=128, n_latents=256, dtype="float64")
    cfg = SwitchSAEConfig(**base)
    data = SyntheticData(dtype=torch.float64)
    a, b = Trainer(cfg), Trainer(cfg, SwitchReference(cfg))
    for x in data.batches(cfg.batch_size, n_batches=5):
        a.train_step(x); b.train_step(x)
    for (n, p), q in zip(a.model.named_parameters(), b.model.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-9, msg=n)


def test_trainer_compile_matches_eager():
    "compile=True trains through graphs torch.compile built (dynamo's counters), to the eager run's weights."
    from torch._dynamo.utils import counters
    base = dict(steps=3, log_every=1, device="cpu", batch_size=64, n_latents=64, n_experts=4, k=4)
    eager = _train(SwitchSAEConfig(**base), n=3)
    counters.clear()
    comp = _train(SwitchSAEConfig(**base, compile=True), n=3)
    assert counters["stats"]["unique_graphs"] > 0 and counters["aot_autograd"]["ok"] > 0, "torch.compile was not used"
    for h1, h2 in zip(eager.history, comp.history):
        assert abs(h1["total"] - h2["total"]) <= 1e-3 * abs(h1["total"])
    for n, p in eager.model.named_parameters():
        torch.testing.assert_close(p, comp.model.state_dict()[n], rtol=1e-4, atol=1e-4)


KEEP = """
import resource, sys, torch
from switch_sae.train import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "1" else None
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
a = torch.ones(2**24); del a                   # 64 MiB, freed
f0 = faults()
for _ in range(4): b = torch.ones(2**24); del b  # four more, each freed
print(kept, faults() - f0)
"""

def test_keep_freed_memory_keeps_freed_memory():
    """After `keep_freed_memory()`, a freed 64 MiB tensor's memory is reused by the next ones: four allocations cost
    at most one tensor's page faults (measured: 0 or 16,384; the heap's top sometimes moves once), against one per
    4 KiB page each without it (65,540; each case in a fresh process)."""
    runs = [subprocess.run([sys.executable, "-c", KEEP, arg], capture_output=True, text=True, timeout=120) for arg in "01"]
    assert all(p.returncode == 0 for p in runs), [p.stderr for p in runs]
    (_, plain), (kept, reused) = [p.stdout.split() for p in runs]
    if kept == "False": pytest.skip("glibc's mallopt is not available here")
    assert kept == "True" and int(plain) > 3 * 2**14 and int(reused) < int(plain) // 2, (plain, reused)


def test_switch_latents_take_a_fraction_of_the_memory():
    "Peak memory of a training step: the dense [B, N] pre-activations vs [B, N/E] (a measurement, not a timing)."
    s = bench.Shape(d=16, n_latents=8192, n_experts=16, k=8, batch=1024)
    peaks = {}
    for impl in ("topk", "switch"):
        cfg = s.config(impl, device="cpu")
        tr = Trainer(cfg, bench.build(impl, cfg))
        x = torch.randn(s.batch, s.d)
        tr.train_step(x)
        peaks[impl] = bench.cpu_step_peak(lambda: tr.train_step(x))
    if peaks["topk"] is None: pytest.skip("this torch profiler records no memory events")
    assert peaks["switch"] < peaks["topk"] / 4, peaks


@pytest.mark.parametrize("impl", bench.IMPLS)
def test_cost_model_is_what_torch_counts(impl):
    "The FLOP model of each implementation equals what torch's FlopCounterMode counts in its forward and backward."
    s = bench.Shape(d=16, n_latents=256, n_experts=8, k=4, batch=64)
    model = bench.build(impl, s.config(impl, device="cpu"))
    want = bench.cost_model(impl, s.d, s.n_latents, s.n_experts, s.k)
    got = bench.counted_flops(model, torch.randn(s.batch, s.d))
    assert got == {"fwd_flops": want["fwd_flops"], "bwd_flops": want["bwd_flops"]}


def test_bench_main_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    res = bench.bench_main(["--grid", "tiny", "--repeats", "2", "--warmup", "1", "--device", "cpu", "--json", str(out)])
    saved = json.loads(out.read_text())
    assert saved["rows"] == json.loads(json.dumps(res["rows"]))
    impls = [r["impl"] for r in saved["rows"]]
    assert impls.count("topk") == 2 and impls.count("reference") == 1 and impls.count("switch") == 2
    for r in saved["rows"]:
        assert r["step_ms"] > 0 and r["fwd_bwd_ms"] > 0 and r["tokens_per_s"] > 0 and len(r["step_ms_all"]) == 2
        assert r["others_cpu"] is None or 0 <= r["others_cpu"] <= 1
    sw, tk = [[r for r in saved["rows"] if r["impl"] == impl and r["n_experts"] == 8][0] for impl in ("switch", "topk")]
    assert sw["speedup_vs_topk"] > 0 and sw["speedup_vs_reference"] > 0
    # the Switch SAE's [B, N/E] pre-activations against TopK's [B, N]: an eighth (to the table's 0.1 MB rounding)
    assert sw["latent_mb"] == pytest.approx(tk["latent_mb"] / 8, abs=0.05) and tk["latent_mb"] > 0.4, (sw, tk)
    assert saved["machine"]["threads"] >= 1 and "load_before" in saved


def test_bench_explicit_shapes_and_errors(tmp_path):
    res = bench.bench_main(["--d", "16", "--n-latents", "256", "--n-experts", "4", "8", "--k", "4", "--batch", "64",
                            "--impls", "topk", "switch", "--repeats", "1", "--warmup", "0", "--device", "cpu"])
    assert [(r["impl"], r["n_experts"]) for r in res["rows"]] == [("topk", 4), ("switch", 4), ("topk", 8), ("switch", 8)]
    with pytest.raises(SystemExit):
        bench.bench_main(["--n-latents", "100", "--n-experts", "3", "--device", "cpu"])
    with pytest.raises(SystemExit):
        bench.bench_main(["--impls", "dense"])


def test_bench_e2e_on_the_tiny_lm():
    rows = bench.bench_e2e(steps=2, n_latents=512, n_experts=8, k=8, batch=256, n_ctxs=16)
    assert [r["impl"] for r in rows] == ["topk", "switch"]
    for r in rows:
        assert r["lm_us_per_token"] >= 0 and r["sae_us_per_token"] > 0 and 0 < r["sae_share"] <= 1


def test_cli_bench_when_wired(cli, tmp_path):
    "`switch-sae bench` once the command line has it."
    import os
    exe = os.path.join(os.path.dirname(sys.executable), "switch-sae")
    if "bench" not in subprocess.run([exe, "--help"], capture_output=True, text=True).stdout:
        pytest.skip("switch-sae has no bench subcommand yet")
    out, md = tmp_path / "b.json", tmp_path / "results" / "bench.md"
    p = cli("bench", "--grid", "tiny", "--repeats", "1", "--warmup", "0", "--device", "cpu", "--json", str(out),
            "--out", str(md))
    assert "| impl |" in p.stdout and json.loads(out.read_text())["rows"]
    report = md.read_text()
    assert f"--out {md}" in report and "| impl |" in report and "speed-up over topk" in report


@cuda
def test_cuda_grouped_mm_bfloat16_against_reference():
    cfg = SwitchSAEConfig(d_in=64, n_latents=1024, n_experts=16, k=16, device="cuda")
    x = torch.randn(512, 64, device="cuda")
    for backend in ("auto", "padded"):
        check_against_reference(cfg, x, backend, skew=1.0, autocast=torch.bfloat16, rtol=5e-2, act_scale=1.0)
    check_against_reference(SwitchSAEConfig(**{**cfg.to_dict(), "dtype": "float64"}), x.double(), "padded", 2.0)


@cuda
def test_cuda_bench_tiny(tmp_path):
    res = bench.bench_main(["--grid", "tiny", "--repeats", "2", "--warmup", "1", "--device", "cuda", "--autocast", "bfloat16"])
    assert all(r["peak_mb"] is not None for r in res["rows"])
