"Scale-free training: activations multiplied by any c > 0 train the same SAE, through `train` and the command line."
import json
import pytest
import torch
from switch_sae import SwitchSAEConfig, train, load_sae
from switch_sae.data import SyntheticConfig, SyntheticData, routing_purity
from switch_sae.evaluate import evaluate_reconstruction

GAINS = (0.01, 1.0, 100.0)


def _metrics(sae, data):
    x, cluster, _ = data.batch(4096, seed=99, index=0)
    m = evaluate_reconstruction(sae, [x])
    with torch.no_grad(): e = sae.encode(x).expert
    return dict(fve=m["fve"], l0=m["l0"], purity=routing_purity(e, cluster), load=m["expert_load"])


def _same(a, b, tol=1e-4):
    for k in ("fve", "l0", "purity"): assert abs(a[k] - b[k]) <= tol, (k, a[k], b[k])
    assert max(abs(x - y) for x, y in zip(a["load"], b["load"])) <= tol, (a["load"], b["load"])


def test_train_api_is_scale_free(tmp_path):
    cfg = SwitchSAEConfig(steps=120, batch_size=512, log_every=40, device="cpu")
    got = {}
    for g in GAINS:
        data = SyntheticData(SyntheticConfig(gain=g))
        tr = train(cfg, lambda start: data.batches(cfg.batch_size, start=start), out=tmp_path / f"g{g}", progress=False)
        sae = load_sae(tmp_path / f"g{g}")                      # the saved SAE takes and returns raw activations
        got[g] = _metrics(sae, data)
        x = data.batch(256, seed=5, index=0)[0]
        assert torch.allclose(sae(x).x_hat, tr.model(x).x_hat)
        got[g]["scale"] = sae.act_scale.item() * g
    for g in GAINS: _same(got[g], got[1.0])
    for g in GAINS: assert abs(got[g]["scale"] / got[1.0]["scale"] - 1) < 1e-5   # the factor absorbs the gain
    assert got[1.0]["fve"] > 0.5                          # it did learn something


def test_unnormalized_training_depends_on_units(tmp_path):
    "The check above can fail: without the scale factor, the units change what is learnt."
    cfg = SwitchSAEConfig(steps=120, batch_size=512, log_every=40, device="cpu", normalize=False)
    got = {}
    for g in (0.01, 100.0):
        data = SyntheticData(SyntheticConfig(gain=g))
        got[g] = _metrics(train(cfg, lambda start: data.batches(cfg.batch_size, start=start), progress=False).model, data)
    with pytest.raises(AssertionError): _same(got[0.01], got[100.0], tol=1e-2)


def test_cli_is_scale_free(cli, tmp_path):
    got = {}
    for g in GAINS:
        out = tmp_path / f"g{g}"
        cli("train", "--data", "synthetic", "--syn-gain", str(g), "--steps", "120", "--batch-size", "512",
            "--log-every", "40", "--no-progress", "--device", "cpu", "--eval-tokens", "4096", "--out", str(out))
        m = json.loads((out / "metrics.json").read_text())
        got[g] = dict(fve=m["fve"], l0=m["l0"], purity=m["routing_purity"], load=m["expert_load"])
    for g in GAINS: _same(got[g], got[1.0])
