"""SAEBench's custom-SAE contract, checked by SAEBench's own code, on the adapter (`SAEBenchSwitch`, no SAELens
needed) and on the SAELens class. Offline, SAEBench can run what needs no model or dataset from the hub: its
interface checks, its weight-based core metrics, and the decoder-only meta-structure eval (a meta-SAE fit on W_dec)."""
import json, math
import pytest
import torch

pytest.importorskip("sae_bench", reason="needs the SAELens environment with sae-bench (make test-interop)")
from sae_bench.custom_saes.base_sae import BaseSAE  # noqa: E402
from sae_bench.evals.core.main import get_featurewise_weight_based_metrics  # noqa: E402
from sae_bench.evals.meta_structure.eval_config import MetaStructureEvalConfig  # noqa: E402
from sae_bench.evals.meta_structure.main import run_eval_single_sae  # noqa: E402
import switch_sae  # noqa: E402,F401
from sae_lens import SAE  # noqa: E402
from switch_sae.interop import SAEBenchSwitch, save_saelens  # noqa: E402
from switch_sae.inspector import demo_sae  # noqa: E402

HOOK = "blocks.1.hook_resid_pre"


@pytest.fixture(scope="module")
def ours():
    sae = demo_sae(device="cpu")
    with torch.no_grad(): sae.act_scale.fill_(0.3)            # a scale to fold: the adapter must give raw units
    return sae


@pytest.fixture(scope="module")
def saes(ours, tmp_path_factory):
    d = tmp_path_factory.mktemp("sl")
    save_saelens(ours, d, HOOK, "tiny", 128)
    return {"adapter": SAEBenchSwitch(ours, "tiny", HOOK), "saelens": SAE.load_from_disk(d)}


@pytest.mark.parametrize("which", ["adapter", "saelens"])
def test_interface(saes, ours, which):
    sae = saes[which]
    # the checks of SAEBench's BaseSAE.test_sae that need no model from the hub, and its decoder-norm check
    assert sae.W_dec.shape == (sae.cfg.d_sae, sae.cfg.d_in) and sae.W_enc.shape == (sae.cfg.d_in, sae.cfg.d_sae)
    assert BaseSAE.check_decoder_norms(sae)
    for field in ("d_in", "d_sae", "hook_name", "context_size", "prepend_bos", "dtype"):
        assert getattr(sae.cfg, field, getattr(getattr(sae.cfg, "metadata", None), field, None)) is not None, field
    assert sae.dtype == torch.float32 and torch.device(sae.device).type == "cpu"
    x = torch.randn(3, 7, 128) * 4
    f = sae.encode(x)
    assert f.shape == (3, 7, 2048) and int((f != 0).sum(-1).max()) <= 16
    torch.testing.assert_close(sae.decode(f), sae(x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sae(x), ours(x).x_hat, atol=1e-4, rtol=1e-4)   # raw activations in, raw out
    torch.testing.assert_close(sae.decode(f), f @ sae.W_dec + sae.b_dec, atol=1e-4, rtol=1e-4)


def test_adapter_states_its_dense_cost(saes):
    assert saes["adapter"].dense_bytes(128 * 128) == 128 * 128 * 2048 * 4


@pytest.mark.parametrize("which", ["adapter", "saelens"])
def test_weight_based_core_metrics(saes, which):
    m = get_featurewise_weight_based_metrics(saes[which])
    assert {len(v) for v in m.values()} == {2048}
    assert all(math.isfinite(v) for vs in m.values() for v in vs)
    assert max(m["max_decoder_cosine_sim"]) <= 1 + 1e-5


@pytest.mark.parametrize("which", ["adapter", "saelens"])
def test_decoder_only_meta_structure_eval(saes, which):
    cfg = MetaStructureEvalConfig(train_steps=30, train_batch_size=256, eval_batch_size=1024, autocast=False,
                                  dtype="float32", random_seed=0)
    out = run_eval_single_sae("switch_sae-demo", which, saes[which], cfg, device="cpu")
    m = out.eval_result_metrics.meta_structure
    assert math.isfinite(m.decoder_fraction_variance_explained) and m.decoder_fraction_variance_explained <= 1
    assert math.isfinite(m.final_reconstruction_mse) and m.final_reconstruction_mse >= 0


class TinyLMTokens:
    "What SAEBench's core eval reads from SAELens's ActivationsStore: batches of token contexts (here the tiny LM's)."
    store_batch_size_prompts = 4
    def __init__(self, contexts): self.contexts, self.context_size, self.i = contexts, contexts.shape[1], 0
    def get_batch_tokens(self, n):
        out = self.contexts[self.i:self.i + n]; self.i += n
        return out
    def reset_input_dataset(self): self.i = 0


def test_core_eval_in_the_tiny_lm(saes, ours):
    "SAEBench's core eval (reconstruction, KL and CE with the SAE spliced in, sparsity) on held-out text, offline."
    from sae_bench.evals.core.eval_config import CoreEvalConfig
    from sae_bench.evals.core.main import run_evals
    from switch_sae import tiny_lm
    model = tiny_lm.load(api="hooked")
    contexts = tiny_lm.contexts(tiny_lm.corpus_tokens("heldout"), 64)[:16]
    cfg = CoreEvalConfig(batch_size_prompts=4, n_eval_reconstruction_batches=2, n_eval_sparsity_variance_batches=2,
                         compute_kl=True, compute_ce_loss=True, compute_l2_norms=True, compute_sparsity_metrics=True,
                         compute_variance_metrics=True, compute_featurewise_density_statistics=False,
                         compute_featurewise_weight_based_metrics=False)
    with torch.no_grad(): ours.act_scale.copy_(demo_sae(device="cpu").act_scale)   # the demo SAE's own scale, for meaningful figures
    try: scalars, _ = run_evals(saes["adapter"], TinyLMTokens(contexts), model, cfg)
    finally:
        with torch.no_grad(): ours.act_scale.fill_(0.3)
    print(json.dumps(scalars, indent=1))
    assert scalars["sparsity"]["l0"] <= 16 + 1e-6
    assert 0.5 < scalars["reconstruction_quality"]["explained_variance"] <= 1
    assert 0.5 < scalars["model_performance_preservation"]["ce_loss_score"] <= 1.01
