"""The routing inspector's logic, through `Inspector` (data) and `RoutingInspector`'s callbacks and widget
observers (as a click in the browser would call them), without a browser."""
import json, shutil
import pytest
import torch

pytest.importorskip("ipywidgets", reason="the routing inspector needs ipywidgets (pip install -e '.[dev]')")
from switch_sae.inspector import (Inspector, RoutingInspector, DEMO_TEXTS, demo_dir, demo_sae, sample_contexts,
                                  run_data, byte_label, html_tokens, expert_colors)
from switch_sae.activations import load_lm, lm_activations

HOOK = "blocks.1.hook_resid_pre"


@pytest.fixture(scope="module")
def ins():
    torch.set_num_threads(1)
    lm = load_lm("tiny")
    return Inspector(demo_sae("cpu"), lm, HOOK, sample_contexts(lm, n=16))


@pytest.fixture
def ui(ins):
    return RoutingInspector(ins)


def test_demo_sae_and_its_run_data():
    sae = demo_sae("cpu")
    assert (sae.cfg.n_latents, sae.cfg.n_experts, sae.cfg.k) == (2048, 8, 16)
    assert run_data(demo_dir())["hook_name"] == HOOK
    assert json.loads((demo_dir() / "metrics.json").read_text())["ce_loss_recovered"] > 0.9


def test_run_data_defaults(tmp_path):
    d = run_data(tmp_path)     # a folder without data.json: the tiny LM's main-job defaults
    assert (d["model"], d["hook_name"], d["eval_dataset"], d["eval_split"]) == ("tiny", HOOK, "stdlib", "heldout")


def test_sample_is_encoded_like_the_sae(ins):
    s = ins.sample
    n, T = s.tokens.shape
    assert s.expert.shape == (n, T - 1) and s.top_acts.shape == (n, T - 1, ins.k)
    acts = lm_activations(ins.lm.model, s.tokens[:2], HOOK)[:, 1:].reshape(-1, 128)
    enc = ins.sae.encode(acts)
    assert torch.equal(s.expert[:2].flatten(), enc.expert)
    torch.testing.assert_close(s.top_acts[:2].reshape(-1, ins.k), enc.top_acts, atol=1e-5, rtol=1e-5)
    assert abs(float(ins.load.sum()) - 1) < 1e-6
    assert int(ins.latent_count.sum()) == int((s.top_acts > 0).sum())


def test_analyze_text(ins):
    c = ins.analyze("a\tb\nc")
    assert c.labels == ["a", "⇥", "b", "↵", "c"] and not c.truncated
    assert c.expert.shape == (5,) and c.probs.shape == (5, ins.E)
    assert torch.equal(c.probs.argmax(-1), c.expert)
    assert (c.top_indices // ins.M == c.expert[:, None]).all()         # latents of the routed expert only
    long = ins.analyze("y" * 300)
    assert long.truncated and len(long.tokens) == ins.n_ctx - 1
    assert ins.analyze("").tokens == []
    assert byte_label(0xe9) == "\\xe9"


def test_expert_summary(ins):
    for e in range(ins.E):
        s = ins.expert_summary(e, n_tokens=5, n_latents=4, n_contexts=2)
        assert s["load"] == pytest.approx(float((ins.sample.expert == e).float().mean()))
        counts = [c for _, _, c, _ in s["tokens"]]
        assert counts == sorted(counts, reverse=True)
        assert all(l["latent"] // ins.M == e and len(l["contexts"]) <= 2 for l in s["latents"])
    with pytest.raises(IndexError, match="does not exist"):
        ins.expert_summary(-1)


def test_latent_summary_and_top_contexts(ins):
    j = int(ins.latent_count.argmax())
    c = ins.analyze(DEMO_TEXTS["code"])
    s = ins.latent_summary(j, c, n_contexts=4, n_neighbours=3)
    assert s["expert"] == j // ins.M and len(s["text_acts"]) == len(c.tokens)
    acts = [sn.activation for sn in s["contexts"]]
    assert acts == sorted(acts, reverse=True) and len({sn.context for sn in s["contexts"]}) == len(acts)
    assert acts[0] == pytest.approx(float(ins.sample.top_acts.flatten()[ins.sample.top_indices.flatten() == j].max()))
    W = ins.sae.W_dec.detach()
    W = W / W.norm(dim=-1, keepdim=True)
    cos = W @ W[j]
    cos[(j // ins.M) * ins.M:(j // ins.M + 1) * ins.M] = -2
    assert [i for i, _, _ in s["neighbours"]] == cos.topk(3).indices.tolist()
    silent = int((ins.latent_count == 0).nonzero()[0]) if (ins.latent_count == 0).any() else None
    if silent is not None: assert ins.top_contexts(silent) == []


def test_token_summary(ins):
    c = ins.analyze("import os")
    t = ins.token_summary(c, 0)
    assert t["label"] == "i" and t["expert"] == t["probs"][0][0]
    with pytest.raises(IndexError):
        ins.token_summary(c, 9)


def test_callbacks_update_the_widgets(ui, ins):
    assert ui.tokens_html.value.count('class="ssae-tok"') == len(ui.codes.tokens) > 0
    e = (ui.expert + 1) % ins.E
    s = ui.select_expert(e)
    assert ui.expert_pick.value == e and f"Expert {e}</h4>" in ui.expert_html.value
    assert ui.latent == s["latents"][0]["latent"] and f"Latent {ui.latent} " in ui.latent_html.value
    assert [v for _, v in ui.latent_pick.options] == [l["latent"] for l in s["latents"]]
    img = ui.load_img.value
    ui.select_expert((e + 1) % ins.E)
    assert ui.load_img.value != img and ui.sim_img.value[:4] == b"\x89PNG"
    t = ui.select_token(3)
    assert ui.token_slider.value == 3 and "token 3 " in ui.token_html.value and t["position"] == 3
    l = ui.select_latent(ins.N - 1)
    assert l["expert"] == ins.E - 1 and ui.latent_box.value == ins.N - 1 == ui.latent_pick.value
    assert ui.latent_pick.options[-1] == (f"latent {ins.N - 1} (expert {ins.E - 1})", ins.N - 1)
    assert set(ui.timings) == {"set_text", "select_expert", "select_token", "select_latent"}


def test_widget_observers_drive_the_callbacks(ui, ins):
    ui.text_pick.value = "a URL"                              # picking a text
    assert ui.codes.text == DEMO_TEXTS["a URL"] and ui.text_box.value == DEMO_TEXTS["a URL"]
    ui.text_box.value = "import os"                           # typing one
    assert ui.codes.labels == list("import os") and ui.text_pick.value == "(your own)"
    assert ui.tokens_html.value.count('class="ssae-tok"') == 9
    other = next(v for _, v in ui.expert_pick.options if v != ui.expert)
    ui.expert_pick.value = other                              # choosing an expert
    assert ui.expert == other and f"Expert {other}</h4>" in ui.expert_html.value
    j = ui.latent_pick.options[-1][1]
    ui.latent_pick.value = j                                  # choosing one of its latents
    assert ui.latent == j == ui.latent_box.value
    ui.latent_box.value = 5                                   # typing any latent id
    assert ui.latent == 5 and "Latent 5 " in ui.latent_html.value
    ui.token_slider.value = 2
    assert ui.token == 2 and "outline:2px" in ui.tokens_html.value


def test_empty_text(ui):
    c = ui.set_text("")
    assert c.tokens == [] and "no text" in ui.tokens_html.value and ui.token_html.value == "<i>no tokens</i>"
    assert ui.select_token(0) is None


def test_html_views(ins):
    c = ins.analyze("<b>&")
    h = html_tokens(c, expert_colors(ins.E))
    assert "&lt;" in h and "&gt;" in h and "&amp;" in h and "<b>&" not in h   # the text is escaped, not markup
    assert len(expert_colors(32)) == 32 and len(set(expert_colors(8))) == 8


def test_inspector_refuses_a_dense_sae(ins):
    from switch_sae import SwitchSAEConfig, TopKSAE
    sae = TopKSAE(SwitchSAEConfig(d_in=128, n_latents=64, k=4, arch="topk", device="cpu"))
    with pytest.raises(ValueError, match="Switch SAE"):
        Inspector(sae, ins.lm, HOOK, ins.sample.tokens[:2])


@pytest.mark.parametrize("variant", [dict(shared_expert=True), dict(top_e=2)])
def test_inspector_refuses_the_variants(ins, variant):
    from switch_sae import SwitchSAEConfig, SwitchSAE
    sae = SwitchSAE(SwitchSAEConfig(d_in=128, n_latents=64, n_experts=4, k=4, device="cpu", **variant))
    with pytest.raises(ValueError, match="shared_expert=True or top_e > 1"):
        Inspector(sae, ins.lm, HOOK, ins.sample.tokens[:2])

def test_from_run(tmp_path, ins):
    run = tmp_path / "run"
    shutil.copytree(demo_dir(), run)
    i2 = Inspector.from_run(run, lm=ins.lm, n_contexts=4, device="cpu")
    assert i2.hook == HOOK and i2.sample.tokens.shape == (4, 128)
