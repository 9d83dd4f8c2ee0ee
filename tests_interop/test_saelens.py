"A Switch SAE in SAELens: exported by the command line, loaded by SAELens, spliced into the tiny LM."
import copy, subprocess, sys
import pytest
import torch

pytest.importorskip("sae_lens", reason="needs the SAELens environment (make test-interop)")
import switch_sae  # noqa: E402  (registers the 'switch' architecture)
from sae_lens import SAE  # noqa: E402
from switch_sae import tiny_lm  # noqa: E402
from switch_sae.activations import load_lm, lm_activations  # noqa: E402
from switch_sae.inspector import demo_dir, demo_sae  # noqa: E402
from switch_sae.saelens import SwitchSAELens, SwitchSAELensConfig, tiny_lm_sae_transformer  # noqa: E402

HOOK = "blocks.1.hook_resid_pre"
ROUTER_HOOKS = {"hook_router_logits", "hook_router_probs", "hook_router_expert"}
SAE_HOOKS = {"hook_sae_input", "hook_sae_acts_pre", "hook_sae_acts_post", "hook_sae_recons", "hook_sae_output"}


@pytest.fixture(scope="module")
def tokens():
    texts = ["def mean(xs):\n    return sum(xs) / len(xs)\n", "class Point:\n    def __init__(self, x, y):\n",
             "import os\nprint(os.path.join('a', 'b'))\n", "for i in range(10):\n    total += i * i\n"]
    return torch.stack([tiny_lm.encode(t)[:32] for t in texts])


@pytest.fixture(scope="module")
def acts(tokens):
    return lm_activations(load_lm("tiny").model, tokens, HOOK)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("sl") / "demo"
    from conftest import run_cli
    p = run_cli("export", demo_dir(), "--format", "saelens", out)
    assert "load_from_disk" in p.stdout
    return out


def test_import_switch_sae_registers_the_architecture():
    from sae_lens.registry import get_sae_class
    assert get_sae_class("switch") == (SwitchSAELens, SwitchSAELensConfig)


def test_load_from_disk_in_a_fresh_interpreter_after_import_switch_sae(exported):
    code = ("import switch_sae; from sae_lens import SAE; s = SAE.load_from_disk(%r); "
            "print(type(s).__name__, s.cfg.d_sae, s.cfg.metadata.hook_name)" % str(exported))
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["SwitchSAELens", "2048", HOOK]


def test_exported_sae_reconstructs_like_ours(exported, acts):
    sae, ours = SAE.load_from_disk(exported), demo_sae(device="cpu")
    enc = ours.encode(acts)
    torch.testing.assert_close(sae(acts), ours(acts).x_hat, atol=1e-4, rtol=1e-4)
    _, cache = sae.run_with_cache(acts)
    assert torch.equal(cache["hook_router_expert"], enc.expert)
    f = cache["hook_sae_acts_post"].reshape(-1, 2048)
    assert int((f != 0).sum(-1).max()) <= 16
    # the same latents fire (top_acts may hold zeros after ReLU; the dense tensor holds no explicit zeros)
    want = torch.zeros_like(f).scatter(-1, enc.top_indices, enc.top_acts)
    assert torch.equal(f != 0, want != 0)


def test_a_freshly_trained_run_exports_exactly(cli, tmp_path, acts):
    "A run of the CLI on the tiny LM (act_scale from its activations, not 1) exported and loaded by SAELens."
    run = tmp_path / "run"
    cli("train", "--out", run, "--steps", "20", "--n-latents", "256", "--n-experts", "4", "--k", "8", "--batch-size", "256",
        "--no-progress", "--device", "cpu", "--eval-tokens", "512", "--n-ctxs", "16", "--ckpt-every", "0")
    ours = switch_sae.load_sae(run, device="cpu")
    assert abs(float(ours.act_scale) - 1) > 1e-3
    cli("export", run, "--format", "saelens", tmp_path / "sl")
    sae = SAE.load_from_disk(tmp_path / "sl")
    torch.testing.assert_close(sae(acts), ours(acts).x_hat, atol=1e-4, rtol=1e-4)
    assert sae.cfg.metadata.context_size == 128 and sae.cfg.metadata.model_name == "tiny"


def test_config_and_weights_round_trip_through_saelens(exported, tmp_path):
    sae = SAE.load_from_disk(exported)
    assert SwitchSAELensConfig.from_dict(sae.cfg.to_dict()) == sae.cfg
    sae.save_model(tmp_path)
    again = SAE.load_from_disk(tmp_path)
    assert again.cfg.to_dict() == sae.cfg.to_dict()
    for k, v in sae.state_dict().items(): assert torch.equal(again.state_dict()[k], v), k


def test_hooked_sae_transformer_splices_it_and_shows_the_router(exported, tokens, acts):
    sae, ours = SAE.load_from_disk(exported), demo_sae(device="cpu")
    model = tiny_lm_sae_transformer()
    clean = model(tokens)
    model.add_sae(sae)
    logits, cache = model.run_with_cache(tokens)
    names = {n.rsplit(".", 1)[1] for n in cache.keys() if n.startswith(HOOK + ".")}
    assert SAE_HOOKS | ROUTER_HOOKS <= names, names
    assert torch.equal(cache[HOOK + ".hook_router_expert"], ours.encode(acts).expert)
    assert cache[HOOK + ".hook_router_probs"].shape == (tokens.numel(), 8)
    torch.testing.assert_close(cache[HOOK + ".hook_sae_output"], ours(acts).x_hat, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(logits, clean, atol=1e-3)          # the SAE really is in the forward pass
    model.reset_saes()
    torch.testing.assert_close(model.run_with_saes(tokens, saes=[sae], use_error_term=True), clean, atol=1e-4, rtol=1e-4)


def test_a_hook_on_the_chosen_expert_reroutes(exported, tokens):
    sae = SAE.load_from_disk(exported)
    model = tiny_lm_sae_transformer()
    model.add_sae(sae)
    with model.hooks(fwd_hooks=[(HOOK + ".hook_router_expert", lambda e, hook: torch.full_like(e, 5))]):
        _, cache = model.run_with_cache(tokens)
    model.reset_saes()
    on = cache[HOOK + ".hook_sae_acts_post"].reshape(-1, 2048).nonzero()[:, 1]
    assert len(on) and bool(((on >= 5 * 256) & (on < 6 * 256)).all())


def test_fold_W_dec_norm(exported, acts):
    sae = SAE.load_from_disk(exported)
    folded = SAE.load_from_disk(exported, fold_W_dec_norm=True)
    torch.testing.assert_close(folded(acts), sae(acts), atol=1e-5, rtol=1e-5)
    bad = copy.deepcopy(sae)
    with torch.no_grad(): bad.W_dec[3].mul_(3)
    with pytest.raises(NotImplementedError, match="different norms"): bad.fold_W_dec_norm()


def test_decode_is_linear_even_when_a_hook_switches_on_more_latents(exported, acts):
    sae = SAE.load_from_disk(exported)
    f = sae.encode(acts).reshape(-1, 2048)
    dense = f + 0.01                                          # every latent on: the dense path
    torch.testing.assert_close(sae.decode(dense), dense @ sae.W_dec + sae.b_dec, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(sae.decode(f), f @ sae.W_dec + sae.b_dec, atol=1e-5, rtol=1e-5)
