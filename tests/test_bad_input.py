"Bad input gets a clear error naming the problem and the fix."
import json, math
from pathlib import Path
import pytest
import torch
from switch_sae import SwitchSAEConfig, SwitchSAE, TopKSAE, SyntheticData, load_sae
from switch_sae.train import Trainer, train, save_checkpoint, latest_checkpoint, NonFiniteError
from switch_sae.checkpoint import CheckpointError

CFG = dict(d_in=16, n_latents=64, n_experts=4, k=4, device="cpu", batch_size=32, steps=10, log_every=5)


@pytest.mark.parametrize("kw,msg", [
    (dict(n_latents=100, n_experts=16), "n_latents (100) is not divisible by n_experts (16)"),
    (dict(k=17), "k (17) is larger than an expert's latents (16"),
    (dict(d_in=-3), "d_in must be a positive integer"),
    (dict(arch="gated"), "arch must be one of"),
    (dict(decay_frac=1.5), "decay_frac"),
    (dict(lr=0.0), "lr must be positive"),
    (dict(batch_size=0), "batch_size must be a positive integer"),
    (dict(device="gpu0"), "device must be"),
])
def test_config_errors(kw, msg):
    with pytest.raises(ValueError) as e:
        SwitchSAEConfig(**{**CFG, **kw})
    assert msg in str(e.value)


@pytest.mark.parametrize("sae_cls,arch", [(SwitchSAE, "switch"), (TopKSAE, "topk")])
def test_input_errors(sae_cls, arch):
    sae = sae_cls(SwitchSAEConfig(**{**CFG, "arch": arch}))
    with pytest.raises(ValueError, match=r"shape \(4, 15\).*d_in = 16"): sae(torch.randn(4, 15))
    with pytest.raises(TypeError, match="float64.*x.to"): sae(torch.randn(4, 16, dtype=torch.float64))
    with pytest.raises(TypeError, match="floating point"): sae(torch.ones(4, 16, dtype=torch.int64))
    with pytest.raises(TypeError, match="torch.Tensor"): sae([[0.0] * 16])


def test_nan_stops_training_and_keeps_last_good_checkpoint(tmp_path):
    cfg = SwitchSAEConfig(**{**CFG, "steps": 20, "ckpt_every": 5})
    data = SyntheticData(SyntheticConfig_small())
    def batches(start):
        for i, x in enumerate(data.batches(32, start=start)):
            if start + i == 7: x = x.clone(); x[3, 2] = float("inf")
            yield x
    with pytest.raises(NonFiniteError, match="step 7: NaN or Inf in the activations"):
        train(cfg, batches, out=tmp_path, progress=False)
    tr = latest_checkpoint(tmp_path)
    assert tr.step == 5
    assert all(torch.isfinite(p).all() for p in tr.model.parameters())


def SyntheticConfig_small():
    from switch_sae import SyntheticConfig
    return SyntheticConfig(d_in=16, n_clusters=4, features_per_cluster=8, n_active=2)


def test_corrupt_checkpoint_is_named_and_resume_falls_back(tmp_path, capsys):
    cfg = SwitchSAEConfig(**{**CFG, "steps": 10, "ckpt_every": 5})
    data = SyntheticData(SyntheticConfig_small())
    train(cfg, lambda s: data.batches(32, start=s), out=tmp_path, progress=False)
    newest = tmp_path / "checkpoints" / "step_0000010" / "model.safetensors"
    raw = newest.read_bytes(); newest.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_sae(newest.parent)
    tr = latest_checkpoint(tmp_path)
    assert tr.step == 5
    assert "skipping damaged checkpoint step_0000010" in capsys.readouterr().out


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint folder"): load_sae(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no cfg.json"): load_sae(tmp_path / "empty")
    (tmp_path / "bad").mkdir(); (tmp_path / "bad" / "cfg.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"): load_sae(tmp_path / "bad")
    (tmp_path / "newer").mkdir(); (tmp_path / "newer" / "cfg.json").write_text(json.dumps({"d_in": 4, "flux": 1}))
    with pytest.raises(CheckpointError, match="unknown config field"): load_sae(tmp_path / "newer")
