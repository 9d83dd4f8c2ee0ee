"""Activation store and cache, with the shipped tiny LM and a local text file (no hub)."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from switch_sae.activations import (ActivationConfig, ActivationStore, CachedActivations, cache_activations,
                                    hub_lm, lm_activations, load_lm, read_manifest, shuffle_buffer, text_stream,
                                    tl_major, token_contexts)

TEXT = " ".join(f"Token {i} goes to expert {i * 7 % 16} of {16 + i % 3}." for i in range(120))


@pytest.fixture(scope="module")
def lm():
    return load_lm("tiny", "cpu")


@pytest.fixture
def cfg(tmp_path):
    (tmp_path / "corpus.txt").write_text(TEXT)
    return ActivationConfig(dataset=str(tmp_path / "corpus.txt"), ctx_len=32, n_ctxs=8, model_batch_size=16,
                            batch_size=62, loop=False, device="cpu")


def rows_in(text, ctx_len):
    return len(text.encode()) // (ctx_len - 1) * (ctx_len - 1)


def test_local_text_file(lm, cfg):
    store = ActivationStore(cfg, lm)
    batches = list(store)
    assert len(batches) == rows_in(TEXT, 32) // 62
    for b in batches:
        assert b.shape == (62, lm.model.cfg.d_model) and b.dtype == torch.float32 and b.device.type == "cpu"
        assert torch.isfinite(b).all()
    stream = torch.cat([a for _, a in store.batches()])
    assert len(stream) == rows_in(TEXT, 32)
    # the batches hold rows of the stream
    assert set(torch.cat(batches).double().sum(1).tolist()) <= set(stream.double().sum(1).tolist())


def test_contexts_are_the_text(lm, cfg):
    store = ActivationStore(cfg, lm)
    tokens, _ = next(store.batches())
    assert tokens.shape == (16, 32)
    assert (tokens[:, 0] == lm.bos).all()
    assert bytes(tokens[:, 1:].flatten().tolist()) == TEXT.encode()[:16 * 31]


def test_matches_hand_run_with_cache(lm, cfg):
    store = ActivationStore(replace(cfg, layer=0), lm)
    tokens, acts = next(store.batches())
    with torch.no_grad():
        _, cache = lm.model.run_with_cache(tokens[2:3])  # whole model, every hook
    torch.testing.assert_close(acts[2 * 31:3 * 31], cache["blocks.0.hook_resid_pre"][0, 1:])
    # the default hook, the input of block 1
    tokens, acts = next(ActivationStore(cfg, lm).batches())
    with torch.no_grad():
        _, cache = lm.model.run_with_cache(tokens[:1])
    torch.testing.assert_close(acts[:31], cache["blocks.1.hook_resid_pre"][0, 1:])


def test_no_bos_keeps_every_position(lm, cfg):
    store = ActivationStore(replace(cfg, prepend_bos=False), lm)
    tokens, acts = next(store.batches())
    assert bytes(tokens.flatten().tolist()) == TEXT.encode()[:16 * 32]
    assert acts.shape == (16 * 32, lm.model.cfg.d_model)
    with torch.no_grad():
        _, cache = lm.model.run_with_cache(tokens[:1])
    torch.testing.assert_close(acts[:32], cache["blocks.1.hook_resid_pre"][0])


def test_deterministic_given_seed(lm, cfg):
    a, b = list(ActivationStore(cfg, lm)), list(ActivationStore(cfg, lm))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    c = next(iter(ActivationStore(replace(cfg, seed=1), lm)))
    assert not torch.equal(a[0], c)


def test_loop_and_dtypes(lm, cfg):
    n = rows_in(TEXT, 32) // 62
    store = ActivationStore(replace(cfg, loop=True), lm)
    it = iter(store)
    assert len([next(it) for _ in range(3 * n)]) == 3 * n and store.epoch >= 2
    for dt in ("bfloat16", "float16"):
        x = next(iter(ActivationStore(replace(cfg, dtype=dt), lm)))
        assert x.dtype == getattr(torch, dt)


def test_cache_round_trip(lm, cfg, tmp_path):
    store = ActivationStore(cfg, lm)
    man = cache_activations(store, tmp_path / "cache", n_tokens=20 * 31, shard_tokens=3 * 31)
    assert man["n_tokens"] == 20 * 31 and man["d_model"] == lm.model.cfg.d_model
    assert man["model"] == "tiny" and man["hook"] == "blocks.1.hook_resid_pre" and man["ctx_len"] == 32
    assert read_manifest(tmp_path / "cache") == man
    cached = CachedActivations(tmp_path / "cache", cfg)
    direct = torch.cat([a for _, a in store.batches()])[:20 * 31]
    stored = torch.cat([torch.from_numpy(np.array(cached.shard(i))) for i in range(len(man["shards"]))])
    assert torch.equal(stored, direct)
    assert torch.equal(torch.cat(list(cached.chunks())), direct)
    tokens = np.concatenate([cached.tokens(i) for i in range(len(man["shards"]))])
    assert (tokens == torch.cat([t for t, _ in store.batches()])[:20].numpy()).all()
    # through the same shuffle buffer: the very batches of the store, while the cache lasts
    for x, y, _ in zip(store, cached, range(4)):
        assert torch.equal(x, y)


def test_cache_bfloat16_and_short_text(lm, cfg, tmp_path):
    c16 = replace(cfg, dtype="bfloat16")
    man = cache_activations(ActivationStore(c16, lm), tmp_path / "c", n_tokens=10**9)
    assert man["n_tokens"] == rows_in(TEXT, 32)  # the text ended first: keep what there is
    x = torch.cat(list(CachedActivations(tmp_path / "c", c16).chunks()))
    assert x.dtype == torch.bfloat16
    assert torch.equal(x.float(), torch.cat([a for _, a in ActivationStore(c16, lm).batches()]).float())
    assert not list((tmp_path / "c").glob("*.pkl"))


def test_cache_text_ending_on_a_shard_boundary(lm, cfg, tmp_path):
    n_ctx = len(TEXT.encode()) // 31
    assert n_ctx % 3 == 0
    man = cache_activations(ActivationStore(cfg, lm), tmp_path / "c", n_tokens=10**9, shard_tokens=n_ctx // 3 * 31)
    assert [s["n_tokens"] for s in man["shards"]] == [n_ctx // 3 * 31] * 3
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == sorted(
        ["manifest.json"] + [f"{k}_{i:05d}.npy" for k in ("acts", "tokens") for i in range(3)])


def test_cache_refuses_a_folder_of_other_files(lm, cfg, tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not an activation cache"):
        cache_activations(ActivationStore(cfg, lm), tmp_path / "c", n_tokens=31)
    assert (tmp_path / "c" / "notes.txt").exists()


def test_existing_cache_does_not_run_the_model(lm, cfg, tmp_path):
    cache_activations(ActivationStore(cfg, lm), tmp_path / "c", n_tokens=10 * 31)

    class Boom(torch.nn.Module):
        cfg = lm.model.cfg
        def run_with_cache(self, *a, **k): raise AssertionError("the model ran")

    store = ActivationStore(cfg, lm._replace(model=Boom()))
    assert cache_activations(store, tmp_path / "c", n_tokens=5 * 31)["n_tokens"] == 10 * 31


def test_cache_mismatch_is_a_clear_error(lm, cfg, tmp_path):
    cache_activations(ActivationStore(cfg, lm), tmp_path / "c", n_tokens=4 * 31)
    with pytest.raises(ValueError, match=r"hook: cached 'blocks.1.hook_resid_pre', asked 'blocks.0.hook_resid_pre'"):
        CachedActivations(tmp_path / "c", replace(cfg, layer=0))
    with pytest.raises(ValueError, match=r"model: cached 'tiny', asked 'gpt2'"):
        CachedActivations(tmp_path / "c", replace(cfg, model="gpt2"))
    with pytest.raises(ValueError, match="ctx_len"):
        cache_activations(ActivationStore(replace(cfg, ctx_len=16), lm), tmp_path / "c", n_tokens=10)
    with pytest.raises(FileNotFoundError, match="no activation cache"):
        CachedActivations(tmp_path / "elsewhere", cfg)


def test_stdlib_corpus_default(lm):
    store = ActivationStore(ActivationConfig(device="cpu", n_ctxs=8, batch_size=128), lm)
    x = next(iter(store))
    assert x.shape == (128, lm.model.cfg.d_model) and torch.isfinite(x).all()
    docs = text_stream("stdlib", "heldout")
    assert isinstance(next(docs), str)
    with pytest.raises(ValueError, match="splits"):
        next(text_stream("stdlib", "validation"))


def test_text_sources(tmp_path):
    (tmp_path / "a.txt").write_text("one")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "b.jsonl").write_text('{"text": "two"}\n{"text": "three"}\n')
    assert list(text_stream(str(tmp_path))) == ["one", "two", "three"]
    with pytest.raises(FileNotFoundError):
        next(text_stream(str(tmp_path / "missing.txt")))
    enc = lambda s: list(s.encode())
    assert list(token_contexts(["abcd", "ef"], enc, 3, bos=0)) == [[0, 97, 98], [0, 99, 100], [0, 101, 102]]


def test_shuffle_buffer_independent_of_chunking():
    data = torch.arange(500.).unsqueeze(1)
    a = torch.cat(list(shuffle_buffer([data], 100, 32, seed=3)))
    b = torch.cat(list(shuffle_buffer(data.split(9), 100, 32, seed=3)))
    assert torch.equal(a, b) and len(a.unique()) == len(a) == 480


@pytest.mark.skipif(tl_major() < 4, reason="local checkpoint folders load through TransformerBridge (4.x)")
def test_hub_path_on_a_local_checkpoint(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=300, n_positions=64,
                                    bos_token_id=0, eos_token_id=0)).eval()
    hf.save_pretrained(tmp_path / "gpt2-random")
    g = hub_lm(str(tmp_path / "gpt2-random"))
    toks = torch.randint(0, 300, (2, 10))
    with torch.no_grad():
        hs = hf(toks, output_hidden_states=True).hidden_states
    torch.testing.assert_close(lm_activations(g.model, toks, "blocks.1.hook_resid_pre"), hs[1])


@pytest.mark.skipif(tl_major() >= 4, reason="HookedTransformer is TransformerLens 3.x")
def test_hooked_transformer_3x(lm, cfg):
    from switch_sae import tiny_lm
    hooked = lm._replace(model=tiny_lm.load(api="hooked"))
    assert type(hooked.model).__name__ == "HookedTransformer"
    batches = list(ActivationStore(cfg, hooked))
    assert len(batches) == rows_in(TEXT, 32) // 62
    for x, y in zip(batches, ActivationStore(cfg, lm)):  # lm: the default API of this TransformerLens
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-4)
