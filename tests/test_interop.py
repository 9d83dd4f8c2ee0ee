"The authors' checkpoints in and out through the command line, and a SAELens folder written without SAELens."
import json, os, pickle, subprocess, sys
import pytest
import torch
from switch_sae import SwitchSAE, SwitchSAEConfig, load_sae
from switch_sae.inspector import demo_dir


def authors_files(folder, d_in=16, dict_size=64, k=4, experts=4, scale=0.37, seed=0):
    "ae.pt and config.json as the authors' training script writes them, from a SwitchSAE with every parameter non-trivial."
    sae = SwitchSAE(SwitchSAEConfig(d_in=d_in, n_latents=dict_size, n_experts=experts, k=k, seed=seed, device="cpu"))
    with torch.no_grad():
        sae.b_dec.normal_(); sae.b_router.normal_(); sae.act_scale.fill_(scale)
    ae = {k_: v.clone() for k_, v in sae.to_reference_state_dict().items()}
    assert set(ae) == {"encoder.weight", "decoder", "router.weight", "b_dec", "b_router"}
    torch.save(ae, folder / "ae.pt")
    cfg = dict(trainer=dict(dict_class="SwitchAutoEncoder", trainer_class="SwitchTrainer", activation_dim=d_in,
                            dict_size=dict_size, k=k, experts=experts, heaviside=False, lb_alpha=3, lr=1e-4, steps=10,
                            seed=0, device="cuda:0", layer=8, lm_name="openai-community/gpt2",
                            submodule_name="resid_post_layer_8"),
               buffer=dict(d_submodule=d_in, io="out", n_ctxs=10000, ctx_len=128, refresh_batch_size=512,
                           out_batch_size=8192, device="cuda:0"))
    (folder / "config.json").write_text(json.dumps(cfg))
    return sae, ae


def test_ae_pt_round_trips_through_import_and_export(cli, tmp_path):
    sae, ae = authors_files(tmp_path)
    p = cli("import", tmp_path / "ae.pt", "--config", tmp_path / "config.json", tmp_path / "imported")
    assert "blocks.8.hook_resid_post" in p.stdout
    imported = load_sae(tmp_path / "imported")
    x = torch.randn(512, 16) * 5
    torch.testing.assert_close(imported(x).x_hat, sae(x).x_hat, atol=1e-5, rtol=1e-5)
    assert torch.equal(imported.encode(x).expert, sae.encode(x).expert)
    cli("export", tmp_path / "imported", "--format", "reference", tmp_path / "back")
    again = torch.load(tmp_path / "back" / "ae.pt", weights_only=True)
    assert set(again) == set(ae)
    for k, v in ae.items(): torch.testing.assert_close(again[k], v, atol=1e-6, rtol=1e-6)
    c = json.loads((tmp_path / "back" / "config.json").read_text())
    assert (c["trainer"]["activation_dim"], c["trainer"]["dict_size"], c["trainer"]["k"], c["trainer"]["experts"]) == (16, 64, 4, 4)
    assert (c["trainer"]["lm_name"], c["trainer"]["submodule_name"], c["buffer"]["io"]) == ("openai-community/gpt2", "resid_post_layer_8", "out")


def test_a_trained_run_exports_to_the_authors_layout(cli, tmp_path):
    "A run with act_scale != 1 becomes an ae.pt whose plain formula (the authors' forward pass) gives our reconstruction."
    sae = load_sae(demo_dir(), device="cpu")
    with torch.no_grad(): sae.act_scale.fill_(0.5)
    sae.save_pretrained(tmp_path / "run")
    cli("export", tmp_path / "run", "--format", "reference", tmp_path / "ref")
    ae = torch.load(tmp_path / "ref" / "ae.pt", weights_only=True)
    x = torch.randn(300, 128) * 3
    probs = ((x - ae["b_router"]) @ ae["router.weight"].T).softmax(-1)
    gate, expert = probs.max(-1)
    M = 2048 // 8
    pre = torch.einsum("bd,bmd->bm", x - ae["b_dec"], ae["encoder.weight"].view(8, M, 128)[expert])
    vals, j = pre.topk(16, -1)
    x_hat = torch.einsum("bk,bkd->bd", vals.relu() * gate[:, None], ae["decoder"][expert[:, None] * M + j]) + ae["b_dec"]
    torch.testing.assert_close(x_hat, sae(x).x_hat, atol=1e-4, rtol=1e-4)


def test_import_never_unpickles(cli, tmp_path):
    "An ae.pt whose pickle would run code is refused by weights_only=True, and the code does not run."
    marker = tmp_path / "ran"
    class Payload:
        def __reduce__(self): return (os.system, (f"touch {marker}",))
    (tmp_path / "ae.pt").write_bytes(pickle.dumps({"encoder.weight": Payload()}))
    (tmp_path / "x").mkdir(); authors_files(tmp_path / "x")                       # a valid config.json
    p = cli("import", tmp_path / "ae.pt", "--config", tmp_path / "x" / "config.json", tmp_path / "out", check=False)
    assert p.returncode != 0 and "weights_only" in p.stderr and "Traceback" not in p.stderr
    assert not marker.exists()


@pytest.mark.parametrize("edit, needle", [
    (lambda c: c["trainer"].pop("dict_size"), "n_latents"),
    (lambda c: c["trainer"].pop("k"), "'k'"),
    (lambda c: c.pop("trainer"), "'trainer'"),
    (lambda c: c["trainer"].update(experts=3), "not divisible"),
    (lambda c: c["buffer"].update(d_submodule=32), "d_submodule"),
])
def test_bad_config_json_is_named(cli, tmp_path, edit, needle):
    authors_files(tmp_path)
    c = json.loads((tmp_path / "config.json").read_text()); edit(c)
    (tmp_path / "config.json").write_text(json.dumps(c))
    p = cli("import", tmp_path / "ae.pt", "--config", tmp_path / "config.json", tmp_path / "out", check=False)
    assert p.returncode != 0 and needle in p.stderr and "Traceback" not in p.stderr, p.stderr


def test_weights_of_another_shape_are_named(cli, tmp_path):
    authors_files(tmp_path, dict_size=128)                   # ae.pt of 128 latents ...
    c = json.loads((tmp_path / "config.json").read_text()); c["trainer"]["dict_size"] = 64   # ... a config of 64
    (tmp_path / "config.json").write_text(json.dumps(c))
    p = cli("import", tmp_path / "ae.pt", "--config", tmp_path / "config.json", tmp_path / "out", check=False)
    assert p.returncode != 0 and "encoder.weight" in p.stderr and "Traceback" not in p.stderr, p.stderr


def test_saelens_export_needs_no_saelens(cli, tmp_path):
    "The default environment writes the SAELens folder (the interop tests load it in the SAELens one)."
    cli("export", demo_dir(), "--format", "saelens", tmp_path / "sl")
    c = json.loads((tmp_path / "sl" / "cfg.json").read_text())
    assert (c["architecture"], c["d_in"], c["d_sae"], c["k"], c["n_experts"]) == ("switch", 128, 2048, 16, 8)
    assert (c["metadata"]["hook_name"], c["metadata"]["model_name"]) == ("blocks.1.hook_resid_pre", "tiny")
    p = cli("export", demo_dir(), "--format", "saelens", tmp_path / "sl", check=False)
    assert p.returncode != 0 and "--overwrite" in p.stderr


def test_import_switch_sae_does_not_import_saelens():
    code = "import sys, switch_sae; print('sae_lens' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    import importlib.util
    assert out.stdout.strip() == str(importlib.util.find_spec("sae_lens") is not None)
