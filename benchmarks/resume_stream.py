"""Time to continue the LM activation stream at batch N: replaying N batches vs restoring the saved stream state.
Usage: python benchmarks/resume_stream.py N  (prints both times, in one process, and whether the next batches agree)."""
import sys, time, tempfile, torch
from switch_sae.activations import ActivationConfig, ActivationStore, load_lm
from switch_sae.checkpoint import save_tensors, load_tensors
from switch_sae.train import _stream_state
N = int(sys.argv[1]) if len(sys.argv) > 1 else 300
cfg = ActivationConfig(device="cpu")          # the `lm` preset's stream: tiny LM, stdlib corpus, n_ctxs=2048, batch 1024
lm = load_lm("tiny", "cpu")
it = iter(ActivationStore(cfg, lm)).starting_at(N)
t = time.time(); want = next(it); replay = time.time() - t
tensors, meta = _stream_state(it)
with tempfile.TemporaryDirectory() as d:
    save_tensors(tensors, f"{d}/data.safetensors")
    # the state is the one after batch N+1; compare the next batch of both paths
    want2 = next(it)
    t = time.time()
    b = iter(ActivationStore(cfg, lm)); b.load_state_dict({**meta, **load_tensors(f"{d}/data.safetensors")}); got = next(b)
    restore = time.time() - t
print(f"N={N}: replay {replay:.1f} s, restore {restore:.1f} s, same next batch: {torch.equal(got, want2)}")
