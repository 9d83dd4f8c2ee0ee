"""A resumed language-model run continues its activation stream from the state saved in the checkpoint: exact, and
without running the language model over the text it had already read.

Planted once (2026-12-06): `train` ignoring the saved stream state (the `stream.load_state_dict(tr.data_state)` line
removed: the stream is replayed, to the same weights): both cases of
test_resume_restores_the_stream_exactly_without_rerunning_the_model fail (before, the cached case could not fail)."""
import json, shutil, signal
from dataclasses import replace
import pytest
import torch
from switch_sae import SwitchSAEConfig, load_sae
from switch_sae.activations import ActivationConfig, ActivationStore, CachedActivations, LM, load_lm, cache_activations
from switch_sae.train import train, checkpoints, load_checkpoint

LM_ARGS = ["--steps", "40", "--n-latents", "512", "--batch-size", "256", "--n-ctxs", "16", "--model-batch-size", "4",
           "--no-progress", "--device", "cpu", "--eval-tokens", "1024", "--log-every", "10", "--ckpt-every", "10"]


class CountingModel:
    "A language model that counts its forward passes."
    def __init__(self, m): self.m, self.calls = m, 0
    def __getattr__(self, k): return getattr(self.m, k)
    def run_with_cache(self, *a, **k): self.calls += 1; return self.m.run_with_cache(*a, **k)


class CountingCache(CachedActivations):
    "An activation cache that counts the rows read from it (in chunks of 256 rows: the reads are seen finely)."
    rows = 0
    def __init__(self, path, cfg): super().__init__(path, cfg, chunk_tokens=256)
    def _chunks(self, loop, start):
        for x, pos in super()._chunks(loop, start):
            CountingCache.rows += len(x); yield x, pos


@pytest.fixture(scope="module")
def lm():
    base = load_lm("tiny", device="cpu")
    return LM(CountingModel(base.model), base.encode, base.bos)


ACT = ActivationConfig(n_ctxs=16, model_batch_size=4, batch_size=256, device="cpu")
CFG = SwitchSAEConfig(d_in=128, n_latents=512, n_experts=8, k=8, batch_size=256, steps=40, log_every=10, ckpt_every=10,
                      device="cpu")


def _same(a, b): return all(torch.equal(a[k], b[k]) for k in a)


def _source(lm, act=ACT, cache=None):
    def batches(start):
        store = ActivationStore(act, lm)
        if cache is not None: store = CountingCache(cache, act)
        return iter(store).starting_at(start)
    return batches


def _ctrl_c_at(source, step):
    "`source`, with Ctrl-C pressed while batch `step` is read: the run stops after that step, as a user would stop it."
    def batches(start):
        stream = source(start)
        class Interrupted(type(stream)):
            def __next__(self):
                self.read += 1
                if self.read == step: signal.raise_signal(signal.SIGINT)
                return super().__next__()
        stream.__class__, stream.read = Interrupted, start
        return stream
    return batches


def _stopped_run(lm, out, step, cache=None):
    "A run stopped (Ctrl-C) at `step`: its newest checkpoint, of that step, keeps the stream state."
    tr = train(CFG, _ctrl_c_at(_source(lm, cache=cache), step), out=out, progress=False)
    assert tr.interrupted and tr.step == step
    return tr


@pytest.mark.parametrize("cached", [False, True], ids=["store", "cache"])
def test_resume_restores_the_stream_exactly_without_rerunning_the_model(tmp_path, lm, cached):
    cache = None
    if cached:
        cache = tmp_path / "cache"
        cache_activations(ActivationStore(ACT, lm), cache, CFG.steps * CFG.batch_size)
    reads = (lambda: CountingCache.rows) if cached else (lambda: lm.model.calls)   # rows of the cache, or LM forwards
    full = train(CFG, _source(lm, cache=cache), out=tmp_path / "a", progress=False)
    assert not any((c / "data.safetensors").exists() for c in checkpoints(tmp_path / "a"))   # a finished run drops it
    before = reads()
    train(CFG, _source(lm, cache=cache), out=tmp_path / "c", progress=False)
    reads_full = reads() - before
    _stopped_run(lm, tmp_path / "b", 30, cache)
    older, ck = checkpoints(tmp_path / "b")[-2:]
    assert (ck / "data.safetensors").exists() and "data_states" in json.loads((ck / "trainer.json").read_text())
    assert not (older / "data.safetensors").exists() and "data_states" not in json.loads((older / "trainer.json").read_text())
    before = reads()
    resumed = train(CFG, _source(lm, cache=cache), out=tmp_path / "b", resume=True, progress=False)
    assert resumed.step == 40 and _same(full.model.state_dict(), resumed.model.state_dict())
    assert [h["step"] for h in resumed.history] == list(range(1, 41))
    # the saved state was used: the resumed run read what its last 10 of 40 steps need, not the stream from its start
    print(f"reads: whole run {reads_full}, resumed at step 30 {reads() - before}")
    assert reads_full >= 20 and reads() - before <= reads_full // 3, (reads_full, reads() - before)


def test_checkpoint_without_stream_state_is_caught_up_by_replaying(tmp_path, lm):
    "A checkpoint of an older version (no stream state) still resumes exactly: the stream is replayed up to the step."
    full = train(CFG, _source(lm), out=tmp_path / "a", progress=False)
    _stopped_run(lm, tmp_path / "b", 30)
    ck = checkpoints(tmp_path / "b")[-1]
    state = json.loads((ck / "trainer.json").read_text()); state.pop("data_states")
    (ck / "trainer.json").write_text(json.dumps(state)); (ck / "data.safetensors").unlink()
    assert load_checkpoint(ck).data_state is None
    lm.model.calls = 0
    resumed = train(CFG, _source(lm), out=tmp_path / "b", resume=True, progress=False)
    assert _same(full.model.state_dict(), resumed.model.state_dict())
    assert lm.model.calls > 0


def test_damaged_stream_state_falls_back_to_the_previous_checkpoint(tmp_path, lm, capsys):
    full = train(CFG, _source(lm), out=tmp_path / "a", progress=False)
    _stopped_run(lm, tmp_path / "b", 30)              # checkpoints 20 (no stream state) and 30 (with it)
    f = checkpoints(tmp_path / "b")[-1] / "data.safetensors"
    raw = bytearray(f.read_bytes()); raw[-50] ^= 0x55; f.write_bytes(bytes(raw))
    resumed = train(CFG, _source(lm), out=tmp_path / "b", resume=True, progress=False)
    out = capsys.readouterr().out
    assert "skipping damaged checkpoint step_0000030" in out and "resuming from step 20" in out
    assert _same(full.model.state_dict(), resumed.model.state_dict())


def test_stream_state_of_another_buffer_is_refused(tmp_path, lm):
    train(replace(CFG, steps=20), _ctrl_c_at(_source(lm), 10), out=tmp_path, progress=False)   # stopped: stream state kept
    other = replace(ACT, n_ctxs=32)
    with pytest.raises(ValueError, match="resume with the same n_ctxs and batch_size"):
        train(replace(CFG, steps=20), _source(lm, other), out=tmp_path, resume=True, progress=False)


def test_cli_lm_resume_is_bit_identical(cli, tmp_path):
    """The command line, in subprocesses: a language-model run that lost its last 10 steps resumes to identical weights
    (from a checkpoint of a finished run, which keeps no stream state: the stream is replayed)."""
    a, b = tmp_path / "a", tmp_path / "b"
    cli("train", "--out", str(a), *LM_ARGS)
    shutil.copytree(a, b)                                  # the same run (deterministic on a CPU), then cut short
    shutil.rmtree(b / "checkpoints" / "step_0000040"); (b / "model.safetensors").unlink()
    p = cli("train", "--out", str(b), "--resume", *LM_ARGS)
    assert "resuming from step 30" in p.stdout
    assert _same(load_sae(a).state_dict(), load_sae(b).state_dict())
