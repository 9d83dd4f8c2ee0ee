"""Time to continue the LM activation stream at batch N: replaying N batches vs restoring the saved stream state.
Usage: python benchmarks/resume_stream.py N [--n-ctxs 2048] [--batch-size 1024]
(prints both times, in one process, and whether the next batches agree; the defaults are the `lm` preset's stream:
the tiny LM, the stdlib corpus, a shuffle buffer of 2048 contexts, batches of 1024)."""
import argparse, time, tempfile, torch
from switch_sae.activations import ActivationConfig, ActivationStore, load_lm
from switch_sae.checkpoint import save_tensors, load_tensors
from switch_sae.train import stream_state
p = argparse.ArgumentParser(); p.add_argument("N", type=int, nargs="?", default=300)
p.add_argument("--n-ctxs", type=int, default=ActivationConfig.n_ctxs)
p.add_argument("--batch-size", type=int, default=ActivationConfig.batch_size); a = p.parse_args()
N = a.N
cfg = ActivationConfig(device="cpu", n_ctxs=a.n_ctxs, batch_size=a.batch_size)
lm = load_lm("tiny", "cpu")
it = iter(ActivationStore(cfg, lm)).starting_at(N)
t = time.time(); want = next(it); replay = time.time() - t
tensors, meta = stream_state(it)
with tempfile.TemporaryDirectory() as d:
    save_tensors(tensors, f"{d}/data.safetensors")
    # the state is the one after batch N+1; compare the next batch of both paths
    want2 = next(it)
    t = time.time()
    b = iter(ActivationStore(cfg, lm)); b.load_state_dict({**meta, **load_tensors(f"{d}/data.safetensors")}); got = next(b)
    restore = time.time() - t
same = torch.equal(got, want2)
print(f"N={N}: replay {replay:.1f} s, restore {restore:.1f} s, same next batch: {same}")
if not same: raise SystemExit("the restored stream's next batch differs from the replayed one")
