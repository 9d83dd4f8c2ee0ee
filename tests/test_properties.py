"Property-based tests (hypothesis): config parsing and the model's shape handling."
import math
from dataclasses import fields
import pytest
import torch
from hypothesis import given, settings, strategies as st, HealthCheck
from switch_sae import SwitchSAEConfig, SwitchSAE, TopKSAE

FIELD_NAMES = [f.name for f in fields(SwitchSAEConfig)]
values = st.one_of(st.none(), st.booleans(), st.integers(-5, 5000), st.floats(allow_nan=True, allow_infinity=True),
                   st.text(max_size=8), st.sampled_from(["switch", "topk", "float32", "cpu", "auto", "bfloat16"]))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(FIELD_NAMES + ["n_expert", "version"]), values, max_size=6))
def test_config_parsing_accepts_or_names_the_problem(d):
    "Any dict either gives a valid config or a ValueError/TypeError that names a field."
    try:
        cfg = SwitchSAEConfig.from_dict(d)
    except (ValueError, TypeError) as e:
        msg = str(e)
        assert any(name in msg for name in FIELD_NAMES + ["n_expert", "version"]), msg
        return
    # a config that was accepted is usable: derived values are sane and it round-trips through JSON
    assert cfg.n_latents % (cfg.n_experts if cfg.arch == "switch" else 1) == 0
    assert 1 <= cfg.k <= cfg.expert_size
    assert cfg.lr_value > 0 and math.isfinite(cfg.lr_value)
    assert SwitchSAEConfig.from_dict(cfg.to_dict()) == cfg


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(d=st.integers(1, 12), e=st.integers(1, 6), m=st.integers(1, 6), k=st.integers(1, 6),
       lead=st.lists(st.integers(1, 4), min_size=0, max_size=3), arch=st.sampled_from(["switch", "topk"]), seed=st.integers(0, 9))
def test_shapes_round_trip(d, e, m, k, lead, arch, seed):
    "Any leading shape is flattened and restored; wrong widths fail with a message naming d_in."
    k = min(k, m)
    cfg = SwitchSAEConfig(d_in=d, n_latents=e * m, n_experts=e, k=k, arch=arch, device="cpu", seed=seed)
    sae = (SwitchSAE if arch == "switch" else TopKSAE)(cfg)
    x = torch.randn(*lead, d) if lead else torch.randn(1, d)
    out = sae(x)
    assert out.x_hat.shape == x.shape
    n_tok = x.numel() // d
    assert out.enc.top_acts.shape == (n_tok, k) and out.enc.top_indices.shape == (n_tok, k)
    assert (out.enc.top_indices // cfg.expert_size == out.enc.expert[:, None]).all()
    assert torch.isfinite(out.total)
    with pytest.raises(ValueError, match="d_in"):
        sae(torch.randn(*lead, d + 1))
