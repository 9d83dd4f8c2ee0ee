"""Bad input gets a clear error naming the problem and the fix.

Planted once (2026-12-06): the message for k too large reworded without the name `k` ("too many active latents per
token ..."): test_every_field_out_of_range[k-1000000] fails (before, `field in msg` found the k of "token")."""
import json, re
import pytest
import torch
from switch_sae import SwitchSAEConfig, SwitchSAE, TopKSAE, SyntheticData, load_sae
from switch_sae.train import train, latest_checkpoint, NonFiniteError
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


# Every field of the config, out of range or of the wrong type, is refused with its name in the message.
BAD_VALUES = dict(d_in=[0, -1, 2.5, "64"], n_latents=[0, None], n_experts=[0, 3.0], k=[0, 10**6], arch=["relu", 1],
                  heaviside=["yes", 1], shared_expert=["yes", 1], top_e=[0, 1.5, 5], lb_alpha=[-0.1, None, float("inf")],
                  lr=[0.0, -1e-3, float("nan")],
                  beta1=[1.0, -0.1], beta2=[1.5], decay_frac=[-0.1, 1.1], grad_clip=[0.0, -1.0], batch_size=[0, 1.5],
                  steps=[0, -10], seed=[1.5, "0"], device=["gpu", "cuda:x", 3], dtype=["float8", None],
                  autocast=["int8", True], compile=["no"], log_every=[0], ckpt_every=[-1], dead_tokens=[0],
                  warn_windows=[0, 2.5], collapse_share=[-0.1, 1.0, None], dead_warn_frac=[-0.01, 1.5, "0.1"],
                  normalize=["yes", 1, None], balance=["none", 1], bias_rate=[0.0, -1e-3], auxk_alpha=[-0.1, "1/32"],
                  scale_batches=[0, 2.5])


def test_every_field_has_a_bad_value_table():
    from dataclasses import fields
    assert {f.name for f in fields(SwitchSAEConfig)} == set(BAD_VALUES)


@pytest.mark.parametrize("field,value", [(f, v) for f, vs in BAD_VALUES.items() for v in vs])
def test_every_field_out_of_range(field, value):
    with pytest.raises(ValueError) as e:
        SwitchSAEConfig(**{**CFG, field: value})
    msg = str(e.value)
    assert re.search(rf"(?<![\w]){field}(?![\w])", msg), msg    # the field named as a word ('k', not the k of 'check')


def test_configs_from_other_versions(tmp_path):
    "An older cfg.json (fields missing) loads with today's defaults; a newer one (unknown fields) is refused by name."
    sae = SwitchSAE(SwitchSAEConfig(**CFG))
    sae.save_pretrained(tmp_path / "old")
    d = json.loads((tmp_path / "old" / "cfg.json").read_text())
    for f in ("autocast", "compile", "dead_tokens"): d.pop(f)
    d["switch_sae_version"] = "0.0.1"
    (tmp_path / "old" / "cfg.json").write_text(json.dumps(d))
    assert load_sae(tmp_path / "old").cfg.compile is False
    d.update(switch_sae_version="9.0", expert_capacity=1.25)
    (tmp_path / "old" / "cfg.json").write_text(json.dumps(d))
    with pytest.raises(CheckpointError, match="expert_capacity"):
        load_sae(tmp_path / "old")


def test_checkpoint_of_another_architecture_or_width(tmp_path):
    SwitchSAE(SwitchSAEConfig(**CFG)).save_pretrained(tmp_path / "s")
    with pytest.raises(CheckpointError, match="holds a 'switch' SAE"):
        TopKSAE.from_pretrained(tmp_path / "s")
    # weights whose shapes do not match the config
    d = json.loads((tmp_path / "s" / "cfg.json").read_text()); d["n_latents"] = 128
    (tmp_path / "s" / "cfg.json").write_text(json.dumps(d))
    with pytest.raises(CheckpointError, match="W_dec has shape"):
        load_sae(tmp_path / "s")


def test_activation_cache_of_another_model_or_hook(tmp_path):
    from switch_sae.activations import ActivationConfig, ActivationStore, cache_activations, CachedActivations
    cfg = ActivationConfig(n_ctxs=4, batch_size=64, device="cpu", model_batch_size=4)
    cache_activations(ActivationStore(cfg), tmp_path / "c", n_tokens=500)
    other = ActivationConfig(**{**cfg.__dict__, "layer": 0})
    with pytest.raises(ValueError, match="hook"):
        CachedActivations(tmp_path / "c", other)


def test_cli_refuses_bad_sources_and_outputs(cli, tmp_path):
    bad = tmp_path / "bad.txt"; bad.write_bytes(b"\xff\xfe\x00 short")
    for args, msg in [(["--dataset", str(bad)], "less text than one context"),
                      (["--dataset", str(tmp_path / "missing.txt")], "cannot read the text"),
                      (["--data", "synthetic", "--out", str(bad / "sub")], "Not a directory"),
                      (["--data", "synthetic", "--out", "/proc/no/such"], "choose a folder you can write to")]:
        argv = ["train", "--steps", "3", "--no-progress", *args]
        if "--out" not in args: argv += ["--out", str(tmp_path / "o")]
        p = cli(*argv, check=False)
        assert p.returncode != 0 and msg in p.stderr and "Traceback" not in p.stderr, (args, p.stderr)
    # resuming with activations from another source is refused
    out = tmp_path / "r"
    cli("train", "--data", "synthetic", "--steps", "10", "--no-progress", "--out", str(out))
    p = cli("train", "--data", "synthetic", "--syn-n-active", "2", "--steps", "20", "--no-progress", "--out", str(out),
            "--resume", check=False)
    assert p.returncode != 0 and "another source" in p.stderr
