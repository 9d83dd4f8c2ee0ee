"""The shipped tiny LM: loads through TransformerLens 4.x (`TransformerBridge`) and, where
installed, 3.x (`HookedTransformer`); hook names and shapes; agreement with the plain-PyTorch
model it was trained as; held-out loss against the unigram baseline; the training command."""
import json, math, platform

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from switch_sae import tiny_lm as T

CFG = T.TINY_LM_CONFIG


def _has_bridge() -> bool:
    try:
        from transformer_lens.model_bridge import TransformerBridge
    except ImportError:
        return False
    return hasattr(TransformerBridge, "boot_native")


def _has_hooked() -> bool:
    try:
        from transformer_lens import HookedTransformer  # noqa: F401 (removed in 4.x)
    except ImportError:
        return False
    return True


APIS = [
    pytest.param("bridge", marks=pytest.mark.skipif(not _has_bridge(), reason="no TransformerBridge.boot_native (transformer-lens 4.x API)")),
    pytest.param("hooked", marks=pytest.mark.skipif(not _has_hooked(), reason="no HookedTransformer (transformer-lens 3.x API)")),
]
RESID = [f"blocks.{l}.hook_resid_pre" for l in range(CFG.n_layers)]


@pytest.fixture(scope="module", params=APIS)
def lm(request):
    return T.load(api=request.param)


@pytest.fixture(scope="module")
def held():
    "A small fixed slice of the held-out split: 32 contexts of n_ctx tokens."
    return T.contexts(T.corpus_tokens("heldout"), CFG.n_ctx)[:32]


@pytest.fixture(scope="module")
def reference():
    return T.load_reference()


def test_default_api_is_installed_one():
    assert T.tl_api() in ("bridge", "hooked")
    assert T.tl_api() == ("bridge" if _has_bridge() else "hooked")


def test_loaded_eval_mode_and_shapes(lm, held):
    assert not lm.training
    tokens = held[:4]
    logits, cache = lm.run_with_cache(tokens, names_filter=lambda n: n in RESID)
    assert logits.shape == (4, CFG.n_ctx, CFG.d_vocab)
    assert torch.isfinite(logits).all()
    assert sorted(cache.keys()) == sorted(RESID)
    for name in RESID:
        assert cache[name].shape == (4, CFG.n_ctx, CFG.d_model)
        assert torch.isfinite(cache[name]).all()


def test_stop_at_layer(lm, held):
    tokens = held[:2]
    _, full = lm.run_with_cache(tokens, names_filter=lambda n: n == RESID[0])
    _, early = lm.run_with_cache(tokens, names_filter=lambda n: n == RESID[0], stop_at_layer=1)
    torch.testing.assert_close(early[RESID[0]], full[RESID[0]])


def test_run_with_hooks_ablation(lm, held):
    tokens, seen = held[:2], {}

    def zero(x, hook):
        seen["shape"] = tuple(x.shape)
        return torch.zeros_like(x)

    clean = lm(tokens, return_type="logits")
    ablated = lm.run_with_hooks(tokens, fwd_hooks=[(RESID[1], zero)], return_type="logits")
    assert seen["shape"] == (2, CFG.n_ctx, CFG.d_model)
    assert not torch.allclose(clean, ablated)
    # hooks are removed afterwards
    torch.testing.assert_close(lm(tokens, return_type="logits"), clean)


def test_matches_reference_model(lm, held, reference):
    tokens = held[:4]
    with torch.no_grad():
        torch.testing.assert_close(lm(tokens, return_type="logits"), reference(tokens), atol=1e-4, rtol=1e-4)
        loss = lm(tokens, return_type="loss")
        assert loss.shape == ()
        torch.testing.assert_close(loss, reference(tokens, return_type="loss"), atol=1e-4, rtol=1e-4)


def test_heldout_beats_unigram(lm, held):
    model_loss = T.loss_per_byte(lm, held)
    unigram = T.unigram_loss_per_byte(T.corpus_tokens("train"), held)
    assert math.isfinite(model_loss)
    assert model_loss < 2.0 < unigram, (model_loss, unigram)


def test_dtype_argument():
    lm64 = T.load(dtype=torch.float64)
    tokens = T.encode("Return the value of x.")[None]
    assert lm64(tokens, return_type="logits").dtype == torch.float64
    torch.testing.assert_close(lm64(tokens, return_type="logits").float(), T.load()(tokens, return_type="logits"), atol=1e-4, rtol=1e-4)


@pytest.mark.skipif(not _has_bridge(), reason="needs TransformerBridge")
def test_bridge_state_dict_matches_transformer_lens_converter(reference):
    conv = pytest.importorskip("transformer_lens.utilities.tl_checkpoint_conversion")
    from transformer_lens.config import TransformerBridgeConfig

    sd = reference.state_dict()
    theirs = conv.convert_tl_checkpoint(sd, TransformerBridgeConfig(**CFG.model_fields))
    ours = T.bridge_state_dict(sd, CFG)
    assert theirs.keys() == ours.keys()
    for k in ours:
        torch.testing.assert_close(ours[k], theirs[k])


def test_shipped_files():
    folder = T.assets_dir()
    weights = folder / "tiny_lm.safetensors"
    assert weights.stat().st_size <= 20 * 2**20
    assert not list(folder.glob("*.pt")) and not list(folder.glob("*.pkl")) and not list(folder.glob("*.bin"))
    facts = T.load_facts()
    assert T.TinyLMConfig(**facts["config"]) == CFG
    assert facts["heldout"]["loss_per_byte"] < facts["heldout"]["unigram_loss_per_byte"] - 1.0
    assert CFG.n_layers >= 2 and CFG.d_model >= 128
    with safe_open(str(weights), "pt") as f:
        assert json.loads(f.metadata()["config"]) == facts["config"]
        assert sorted(f.keys()) == sorted(T.TinyLM().state_dict().keys())


def test_corpus_split_is_fixed():
    docs = T.stdlib_documents()
    names = [n for n, _ in docs]
    assert len(set(names)) == len(names)
    corpus = T.stdlib_corpus()
    assert len(corpus["train"]) + len(corpus["heldout"]) == len(docs)
    assert 0 < len(corpus["heldout"]) < len(corpus["train"])
    assert [n for n in names if T.is_heldout(n)] == [n for n, _ in docs if T.is_heldout(n)]
    facts = T.load_facts()["corpus"]
    if platform.python_version() != facts["python"]:
        pytest.skip(f"corpus digests were recorded on Python {facts['python']}")
    assert T.corpus_facts() == facts


def test_cli_trains_reproducibly(tmp_path):
    small = ["--steps", "3", "--warmup", "1", "--d_model", "32", "--n_heads", "2", "--d_head", "16",
             "--d_mlp", "64", "--n_ctx", "32", "--batch_size", "4", "--log_every", "1", "--eval_contexts", "16"]
    a, b = tmp_path / "a", tmp_path / "b"
    facts = T.main(small + ["--out", str(a)])
    T.main(small + ["--out", str(b)])
    wa, wb = (load_file(str(d / "tiny_lm.safetensors")) for d in (a, b))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)  # same seed, same weights
    assert facts["training"]["steps"] == 3 and facts["heldout"]["contexts"] == 16
    assert T.load_facts(a)["config"]["d_model"] == 32
    lm, ref = T.load(path=a), T.load_reference(a)
    tokens = T.encode("def f(x):")[None]
    torch.testing.assert_close(lm(tokens, return_type="logits"), ref(tokens), atol=1e-4, rtol=1e-4)
