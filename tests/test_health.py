"Guards of a training run: routing-collapse and dead-latent warnings, out-of-memory, an empty stream, unfinished writes."
import errno, json
import pytest
import torch
from switch_sae import SwitchSAEConfig, SwitchSAE, SyntheticData, SyntheticConfig
from switch_sae.train import (Trainer, train, checkpoints, latest_checkpoint, BatchTooLargeError,
                              fitting_batch_size, _postfix)

SYN = SyntheticConfig(d_in=32, n_clusters=4, features_per_cluster=8, n_active=2)
SMALL = dict(d_in=32, n_latents=64, n_experts=4, k=4, device="cpu", batch_size=128, steps=60, log_every=5,
             warn_windows=3)


def _warnings(tr):
    return [(h["step"], w) for h in tr.history for w in h.get("warnings", [])]


def _collapsing(cfg):
    "A trainer whose router can never pick expert 3: its row is the mean of the others, so its logit is never the largest."
    tr = Trainer(cfg)
    with torch.no_grad(): tr.model.W_router[3] = tr.model.W_router[:3].mean(0)
    return tr


def test_routing_collapse_is_warned_in_log_bar_and_history(capsys):
    cfg = SwitchSAEConfig(**SMALL, lb_alpha=0.0)
    data = SyntheticData(SYN)
    tr = train(cfg, lambda s: data.batches(128, start=s), trainer=_collapsing(cfg), progress=True)
    loads = [h["expert_load"][3] for h in tr.history if "expert_load" in h]
    assert max(loads) < 0.1 / 4, loads                  # the run did collapse
    w = _warnings(tr)
    assert len(w) == 1, w                               # said once, when it had lasted warn_windows windows
    step, msg = w[0]
    assert step == 3 * 5 and "routing collapse: expert 3" in msg and "since step 1" in msg and "--lb-alpha, now 0.0" in msg
    cap = capsys.readouterr()
    assert cap.out.count("warning: routing collapse: expert 3") == 1, cap.out
    assert "warn=collapse 3" in cap.err, cap.err[-500:]   # the progress bar's postfix
    assert tr.alerts == ["collapse 3"]


def test_collapse_warning_is_off_when_lb_alpha_keeps_experts_alive():
    "The same biased start with the paper's load balancing (lb_alpha=3): expert 3 gets its tokens, nothing is warned."
    cfg = SwitchSAEConfig(**SMALL, lb_alpha=3.0)
    data = SyntheticData(SYN)
    tr = train(cfg, lambda s: data.batches(128, start=s), trainer=_collapsing(cfg), progress=False)
    assert tr.history[-1]["expert_load"][3] > 0.1 / 4
    assert not any("routing collapse" in m for _, m in _warnings(tr))


def test_rising_dead_fraction_is_warned_after_dead_tokens(capsys):
    "64 latents for 36 features with a window of 10 batches: latents die as they specialise, and that is warned."
    cfg = SwitchSAEConfig(**SMALL, dead_tokens=1280)
    data = SyntheticData(SYN)
    tr = train(cfg, lambda s: data.batches(128, start=s), progress=False)
    w = [(s, m) for s, m in _warnings(tr) if "dead latents rising" in m]
    assert w, [round(h["dead_frac"], 3) for h in tr.history if "dead_frac" in h]
    wins = {h["step"]: h for h in tr.history if "dead_frac" in h}
    for step, msg in w:
        assert wins[step]["dead_frac"] > cfg.dead_warn_frac and "1280 tokens" in msg and "--lr" in msg
        # every window it looked at came after dead_tokens had passed (10 steps), over warn_windows windows
        assert step - cfg.warn_windows * cfg.log_every >= 1280 // 128
    assert "warning: dead latents rising" in capsys.readouterr().out


def test_no_dead_warning_before_dead_tokens_have_passed():
    "Early in a run most latents have not fired yet; with dead_tokens not reached, nothing may be called dead."
    cfg = SwitchSAEConfig(**{**SMALL, "n_latents": 512, "batch_size": 32, "log_every": 1, "steps": 30}, dead_tokens=10**6)
    data = SyntheticData(SYN)
    tr = train(cfg, lambda s: data.batches(32, start=s), progress=False)
    early = [h["dead_frac"] for h in tr.history if "dead_frac" in h][:3]
    assert max(early) > cfg.dead_warn_frac       # it would look alarming...
    assert _warnings(tr) == [] and tr.alerts == []  # ...but it is not warned about


def test_healthy_run_warns_nothing(capsys):
    "The synthetic defaults with the paper's load balancing, a dead window of 20 steps: no warning at all."
    cfg = SwitchSAEConfig(device="cpu", steps=300, log_every=10, dead_tokens=20 * 1024)
    data = SyntheticData()
    tr = train(cfg, lambda s: data.batches(1024, start=s), progress=False)
    assert _warnings(tr) == [] and tr.alerts == []
    assert "warning" not in capsys.readouterr().out
    assert "warn" not in _postfix(tr.history[-1], cfg.n_experts, tr.alerts)


def test_resumed_run_warns_as_the_uninterrupted_one(tmp_path):
    "The warnings are read from the history, which a checkpoint keeps: resuming neither repeats nor loses one."
    cfg = SwitchSAEConfig(**SMALL, lb_alpha=0.0, ckpt_every=10)
    data = SyntheticData(SYN)
    full = train(cfg, lambda s: data.batches(128, start=s), trainer=_collapsing(cfg), progress=False)
    half_cfg = SwitchSAEConfig(**{**cfg.to_dict(), "steps": 10})
    train(half_cfg, lambda s: data.batches(128, start=s), out=tmp_path, trainer=_collapsing(cfg), progress=False)
    resumed = train(cfg, lambda s: data.batches(128, start=s), out=tmp_path, resume=True, progress=False)
    assert _warnings(resumed) == _warnings(full) and len(_warnings(full)) == 1
    assert json.loads((tmp_path / "history.jsonl").read_text().splitlines()[14])["warnings"] == full.history[14]["warnings"]


# --- out of memory -------------------------------------------------------------------------------------------

def _limit_rows(monkeypatch, limit):
    "Simulate a device that runs out of memory for a forward pass over more than `limit` rows."
    forward = SwitchSAE.forward
    def limited(self, x):
        if len(x) > limit: raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 3.00 GiB (simulated)")
        return forward(self, x)
    monkeypatch.setattr(SwitchSAE, "forward", limited)


@pytest.mark.parametrize("limit,fits", [(700, 512), (300, 256), (100, 64), (1, 1)])
def test_oom_suggests_the_largest_halving_that_fits(monkeypatch, limit, fits):
    _limit_rows(monkeypatch, limit)
    cfg = SwitchSAEConfig(device="cpu", steps=5, n_latents=256)
    with pytest.raises(BatchTooLargeError) as e:
        train(cfg, SyntheticData().batches(1024), progress=False)
    msg = str(e.value)
    assert "step 0: out of memory on cpu with batch_size=1024" in msg and "Tried to allocate 3.00 GiB" in msg
    assert f"run again with --batch-size {fits} " in msg, msg


def test_oom_when_not_even_one_row_fits(monkeypatch):
    _limit_rows(monkeypatch, 0)
    with pytest.raises(BatchTooLargeError, match="Not even a batch of 1 fits.*smaller n_latents"):
        train(SwitchSAEConfig(device="cpu", steps=5, n_latents=256), SyntheticData().batches(1024), progress=False)


def test_oom_outside_forward_and_backward(monkeypatch):
    "Out of memory in the optimizer step: the whole batch fits forward and backward, and the message says so."
    def step(self, *a, **k): raise torch.OutOfMemoryError("CUDA out of memory (simulated, optimizer)")
    monkeypatch.setattr(torch.optim.Adam, "step", step)
    with pytest.raises(BatchTooLargeError, match="ran out elsewhere"):
        train(SwitchSAEConfig(device="cpu", steps=5, n_latents=256), SyntheticData().batches(256), progress=False)


def test_oom_search_leaves_the_model_unchanged():
    cfg = SwitchSAEConfig(device="cpu", steps=5, n_latents=256)
    tr = Trainer(cfg)
    for x in SyntheticData().batches(256, n_batches=2): tr.train_step(x)
    before = {k: v.clone() for k, v in tr.model.state_dict().items()}
    opt_before = {k: v.clone() for k, v in tr.opt.state[tr.model.W_enc].items()}
    assert fitting_batch_size(tr, torch.randn(256, 64)) == 256
    assert all(torch.equal(v, tr.model.state_dict()[k]) for k, v in before.items())
    assert all(torch.equal(v, tr.opt.state[tr.model.W_enc][k]) for k, v in opt_before.items())
    assert all(p.grad is None for p in tr.model.parameters())


def test_oom_mid_run_keeps_the_last_checkpoint(monkeypatch, tmp_path):
    "Batches grow to 2048 rows at step 12: the run stops there; checkpoint step 10 stays, nothing half written."
    _limit_rows(monkeypatch, 1500)
    cfg = SwitchSAEConfig(device="cpu", steps=20, n_latents=256, log_every=5, ckpt_every=5)
    data = SyntheticData()
    def batches(start):
        for i, x in enumerate(data.batches(1024, start=start)):
            yield torch.cat([x, x]) if start + i >= 12 else x
    with pytest.raises(BatchTooLargeError, match="step 12: .*--batch-size 1024 "):
        train(cfg, batches, out=tmp_path, progress=False)
    assert [p.name for p in checkpoints(tmp_path)] == ["step_0000005", "step_0000010"]
    assert not list((tmp_path / "checkpoints").glob(".tmp*")) and not (tmp_path / "model.safetensors").exists()
    assert latest_checkpoint(tmp_path).step == 10


def test_cli_turns_oom_into_an_error_line(monkeypatch, tmp_path, capsys):
    from switch_sae.cli import main
    _limit_rows(monkeypatch, 300)
    with pytest.raises(SystemExit) as e:
        main(["train", "--data", "synthetic", "--steps", "5", "--device", "cpu", "--no-progress", "--out", str(tmp_path / "o")])
    msg = str(e.value.code)
    assert msg.startswith("error: step 0: out of memory") and "--batch-size 256 " in msg, msg


# --- an empty stream; unfinished writes -----------------------------------------------------------------------

@pytest.mark.parametrize("batches", [[], lambda start: iter(())], ids=["list", "callable"])
def test_empty_stream_is_an_error_and_writes_no_model(tmp_path, batches):
    cfg = SwitchSAEConfig(device="cpu", steps=5)
    with pytest.raises(ValueError, match="yielded no batch at all"):
        train(cfg, batches, out=tmp_path, progress=False)
    assert not (tmp_path / "model.safetensors").exists() and not checkpoints(tmp_path)


def test_stream_ending_early_is_reported_not_an_error(tmp_path, capsys):
    cfg = SwitchSAEConfig(device="cpu", steps=5, n_latents=256)
    tr = train(cfg, SyntheticData().batches(256, n_batches=3), out=tmp_path, progress=False)
    assert tr.step == 3 and "the batch stream ended at step 3 of 5" in capsys.readouterr().out


def test_failed_checkpoint_write_leaves_no_tmp_folder(monkeypatch, tmp_path):
    import importlib
    T = importlib.import_module("switch_sae.train")      # `switch_sae.train` is also the function
    cfg = SwitchSAEConfig(device="cpu", steps=10, n_latents=256, ckpt_every=5)
    save = T.save_tensors
    def failing(tensors, path, *a, **k):
        if "step_0000010" in str(path) and path.name == "trainer.safetensors":
            raise OSError(errno.ENOSPC, "No space left on device")
        return save(tensors, path, *a, **k)
    monkeypatch.setattr(T, "save_tensors", failing)
    with pytest.raises(OSError, match="No space"):
        train(cfg, lambda s: SyntheticData().batches(256, start=s), out=tmp_path, progress=False)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step_0000005"]


def test_stale_unfinished_writes_are_removed_on_resume(tmp_path, capsys):
    cfg = SwitchSAEConfig(device="cpu", steps=10, n_latents=256, ckpt_every=5)
    batches = lambda s: SyntheticData().batches(256, start=s)
    train(cfg, batches, out=tmp_path, progress=False)
    stale = tmp_path / "checkpoints" / ".tmp_step_0000015"            # as left by a kill during a write
    stale.mkdir(); (stale / "cfg.json").write_text("{")
    (tmp_path / ".model.safetensors.k2j4x_1a.tmp").write_bytes(b"half")
    (tmp_path / ".notes.txt.tmp").write_text("not ours")             # a file the run did not write stays
    train(SwitchSAEConfig(**{**cfg.to_dict(), "steps": 15}), batches, out=tmp_path, resume=True, progress=False)
    out = capsys.readouterr().out
    assert "removed checkpoints/.tmp_step_0000015" in out and "removed .model.safetensors.k2j4x_1a.tmp" in out
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_0000010", "step_0000015"]
    assert not (tmp_path / ".model.safetensors.k2j4x_1a.tmp").exists() and (tmp_path / ".notes.txt.tmp").exists()


def test_oom_under_autocast_does_not_suggest_autocast(monkeypatch):
    _limit_rows(monkeypatch, 300)
    with pytest.raises(BatchTooLargeError) as e:
        train(SwitchSAEConfig(device="cpu", steps=5, n_latents=256, autocast="bfloat16"), SyntheticData().batches(1024),
              progress=False)
    assert "--batch-size 256" in str(e.value) and "--autocast" not in str(e.value)
