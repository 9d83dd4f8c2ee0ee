"The reference code's variants (shared expert = switch1on, top-e routing = moe) as config options: checkpoints, resume, CLI, training."
import argparse
import pytest
import torch
from switch_sae import SwitchSAEConfig, SwitchSAE, SyntheticData, SyntheticConfig, load_sae
from switch_sae.train import train, latest_checkpoint
from switch_sae.switch import switch_reference

torch.set_num_threads(1)
BASE = dict(d_in=16, n_latents=96, n_experts=6, k=6, device="cpu", batch_size=64, log_every=5)
VARIANTS = [dict(shared_expert=True), dict(top_e=2), dict(top_e=3, shared_expert=True, heaviside=True)]


@pytest.mark.parametrize("var", VARIANTS)
def test_checkpoint_round_trip(tmp_path, var):
    cfg = SwitchSAEConfig(**BASE, **var)
    sae = SwitchSAE(cfg)
    with torch.no_grad(): sae.b_router.normal_()
    sae.save_pretrained(tmp_path / "m")
    back = load_sae(tmp_path / "m")
    assert back.cfg == cfg and back.cfg.top_e == cfg.top_e and back.cfg.shared_expert == cfg.shared_expert
    x = torch.randn(32, 16)
    a, b = sae(x), back(x)
    assert torch.equal(a.x_hat, b.x_hat) and torch.equal(a.enc.top_indices, b.enc.top_indices)
    # the authors' layout: router.weight has E - 1 rows with a shared expert (their switch1on)
    ref = sae.to_reference_state_dict()
    assert ref["router.weight"].shape[0] == cfg.n_experts - cfg.shared_expert
    again = SwitchSAE.from_reference_state_dict(ref, cfg)
    assert torch.equal(again(x).x_hat, a.x_hat)


def test_resume_refuses_another_variant(tmp_path):
    data = SyntheticData(SyntheticConfig(d_in=16, n_clusters=4, features_per_cluster=8, n_active=2))
    cfg = SwitchSAEConfig(**BASE, top_e=2, steps=6, ckpt_every=3)
    train(cfg, lambda s: data.batches(64, start=s), out=tmp_path, progress=False)
    for other in (dict(top_e=1), dict(top_e=2, shared_expert=True)):
        with pytest.raises(ValueError, match="top_e|shared_expert"):
            latest_checkpoint(tmp_path, SwitchSAEConfig(**{**cfg.to_dict(), **other}))
    assert latest_checkpoint(tmp_path, cfg).step == 6


def test_cli_flags():
    from switch_sae.args import add_dataclass_args, given_args
    p = argparse.ArgumentParser(); add_dataclass_args(p, SwitchSAEConfig)
    a = p.parse_args(["--top-e", "2", "--shared-expert"])
    assert given_args(SwitchSAEConfig, a) == dict(top_e=2, shared_expert=True)


@pytest.mark.parametrize("var", VARIANTS + [dict()])
def test_variants_learn(var):
    "Each variant's reconstruction loss falls during a short run (the gates and the routed encoders are trained)."
    data = SyntheticData(SyntheticConfig(d_in=16, n_clusters=4, features_per_cluster=8, n_active=2))
    cfg = SwitchSAEConfig(**BASE, **var, steps=60, lr=3e-3)
    tr = train(cfg, lambda s: data.batches(64, start=s), progress=False)
    l2 = [h["l2"] for h in tr.history]
    assert l2[-1] < 0.7 * l2[0], l2


def test_variant_matches_reference_after_training():
    "After some training (decoder rows renormalised, router moved) the routed model still equals the reference."
    data = SyntheticData(SyntheticConfig(d_in=16, n_clusters=4, features_per_cluster=8, n_active=2))
    cfg = SwitchSAEConfig(**BASE, top_e=2, shared_expert=True, steps=20)
    tr = train(cfg, lambda s: data.batches(64, start=s), progress=False)
    x = next(iter(data.batches(64, start=100)))
    a, b = tr.model(x), switch_reference(tr.model, x)
    torch.testing.assert_close(a.x_hat, b.x_hat, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(a.lb, b.lb)
