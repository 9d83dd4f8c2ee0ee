"""The course's checks pass with the worked solutions, and fail helpfully on a blank exercise and on the usual
mistakes: each wrong implementation below must be named by the check's message."""
import pytest
import torch
import torch.nn.functional as F
from switch_sae import course as C
from switch_sae import course_solutions as S


def blank(*args, **kw):
    raise NotImplementedError


def fails(check, fn, *match, **kw):
    "`check(fn)` raises AssertionError whose message contains every string of `match`."
    with pytest.raises(AssertionError) as e:
        check(fn, **kw)
    msg = str(e.value)
    for m in match: assert m in msg, f"expected {m!r} in the message: {msg}"
    return msg


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ----- solutions flag

def test_solutions_flag(monkeypatch):
    monkeypatch.delenv("SWITCH_SAE_SOLUTIONS", raising=False)
    monkeypatch.delenv("IN_TEST", raising=False)
    assert not C.solutions_enabled()
    monkeypatch.setenv("IN_TEST", "1")           # what nbdev_test sets
    assert C.solutions_enabled()
    monkeypatch.setenv("SWITCH_SAE_SOLUTIONS", "0")
    assert not C.solutions_enabled()
    monkeypatch.delenv("IN_TEST")
    monkeypatch.setenv("SWITCH_SAE_SOLUTIONS", "1")
    assert C.solutions_enabled()


def test_show_solution(capsys):
    src = C.show_solution("route")
    assert "def route" in src and "softmax" in src and "def route" in capsys.readouterr().out
    with pytest.raises(ValueError, match="no solution"):
        C.show_solution("nope")


@pytest.mark.parametrize("check", [C.check_route, C.check_topk, C.check_switch_forward, C.check_lb_loss, C.check_train_step])
def test_blank_exercise_says_not_written(check):
    msg = fails(check, blank, "is not written yet", "show_solution(")
    assert "NotImplementedError" in msg


def test_error_inside_learner_code_is_explained():
    def bad_route(x, W, b): return (x - b) @ W          # W not transposed: a shape error
    fails(C.check_route, bad_route, "route raised RuntimeError", "shapes")


# ----- 1. router

def test_route_solution(capsys):
    C.check_route(S.route, device="cpu")
    assert capsys.readouterr().out.startswith("✓ route")


@pytest.mark.parametrize("wrong, match", [
    (lambda x, W, b: (((x - b) @ W.T), ((x - b) @ W.T).argmax(-1), ((x - b) @ W.T).max(-1).values), "raw logits"),
    (lambda x, W, b: (F.softmax((x - b) @ W.T, 0),) + tuple(F.softmax((x - b) @ W.T, 0).max(-1))[::-1], "over the batch"),
    (lambda x, W, b: (lambda p: (p, p.argmax(-1), p.max(-1).values))(F.softmax(x @ W.T, -1)), "ignore b_router"),
    (lambda x, W, b: (lambda p: (p, p.argmin(-1), p.min(-1).values))(F.softmax((x - b) @ W.T, -1)), "argmin"),
    (lambda x, W, b: (lambda p: (p, p.argmax(-1), torch.ones(len(p))))(F.softmax((x - b) @ W.T, -1)), "Heaviside"),
    (lambda x, W, b: (lambda p: (p, p.argmax(-1), p.max(-1).values.detach()))(F.softmax((x - b) @ W.T, -1)), "no gradient"),
    (lambda x, W, b: (lambda p: (p, p.argmax(-1, keepdim=True), p.max(-1).values))(F.softmax((x - b) @ W.T, -1)), "squeeze"),
    (lambda x, W, b: F.softmax((x - b) @ W.T, -1), "three things"),
])
def test_route_mistakes(wrong, match):
    fails(C.check_route, wrong, match, device="cpu")


# ----- 2. TopK

def test_topk_solution():
    C.check_topk(S.topk, device="cpu")


@pytest.mark.parametrize("wrong, match", [
    (lambda pre, k: pre.topk(k, dim=-1), "kept negative values: apply ReLU"),
    (lambda pre, k: (lambda v, i: (pre.gather(1, i).relu(), i))(*pre.abs().topk(k, dim=-1)), "largest |values|"),
    (lambda pre, k: (lambda v, i: (v.relu(), i))(*pre.topk(k, dim=-1, largest=False)), "smallest"),
    (lambda pre, k: (lambda v, i: (v.relu(), i))(*pre.topk(k, dim=0)), "dim=-1"),
    (lambda pre, k: (lambda v, i: (v.relu().detach(), i))(*pre.topk(k, dim=-1)), "no gradient"),
])
def test_topk_mistakes(wrong, match):
    fails(C.check_topk, wrong, match, device="cpu")


# ----- 3. Switch forward

def test_switch_forward_solution():
    C.check_switch_forward(S.switch_forward, device="cpu")


@pytest.mark.parametrize("flag, match", [
    ("gate", "router probability p_i"), ("within", "all N latents"), ("add_bdec", "add b_dec back"),
    ("sub_bdec", "subtract b_dec from x"), ("offset", "row i*M + j"), ("relu", "apply ReLU")])
def test_switch_forward_mistakes(flag, match):
    wrong = lambda *a: C._switch_variant(*a, **{flag: False})
    fails(C.check_switch_forward, wrong, match, device="cpu")


def test_switch_forward_unknown_mistake_gives_the_recipe():
    fails(C.check_switch_forward, lambda *a: C._switch_variant(*a) * 1.01, "differs", "p_i * sum_j", device="cpu")


# ----- 4. load balancing

def test_lb_loss_solution():
    C.check_lb_loss(S.lb_loss, device="cpu")


def _f(p, e): return torch.bincount(e, minlength=p.shape[-1]).to(p.dtype) / e.numel()

@pytest.mark.parametrize("wrong, match", [
    (lambda p, e: (_f(p, e) * p.mean(0)).sum(), "should be 1 for uniform routing, got 0.25"),
    (lambda p, e: p.shape[-1] * (p.mean(0) * p.mean(0)).sum(), "not the mean probability"),
    (lambda p, e: p.shape[-1] * (_f(p, e) * p.mean(0)), "return a scalar"),
    (lambda p, e: p.shape[-1] * (_f(p, e) * p.mean(0).detach()).sum(), "no gradient"),
    (lambda p, e: float(p.shape[-1] * (_f(p, e) * p.mean(0)).sum()), "return a tensor"),
    (lambda p, e: p.shape[-1] * (torch.bincount(e, minlength=p.shape[-1]).float() * p.mean(0)).sum(), "fraction of the batch"),
    (lambda p, e: p.shape[-1] * (p.mean(0) * _f(p, e) + 0.01 * p.mean(0) ** 2).sum(), "uniform routing, got 1.01"),
    (lambda p, e: p.shape[-1] * (_f(p, e) * p.median(0).values).sum(), "expected"),      # right at uniform only
])
def test_lb_loss_mistakes(wrong, match):
    fails(C.check_lb_loss, wrong, match, device="cpu")


# ----- 5. training step

def test_train_step_solution():
    C.check_train_step(S.train_step, device="cpu")


def test_reference_step_is_the_solution():
    sae0, xs = C._step_setup("cpu", 0)
    a, la = C._run_steps(C.reference_step, sae0, xs)
    b, lb = C._run_steps(S.train_step, sae0, xs)
    assert C._same_params(a, b, atol=1e-6) and la == pytest.approx(lb)


@pytest.mark.parametrize("flag, match", [
    ("zero_grad", "opt.zero_grad()"), ("lb", "reconstruction loss only"), ("parallel", "component along the row"),
    ("clip", "clip the gradient norm"), ("normalize", "renormalise the decoder rows"),
    ("normalize_at_end", "not after the update"), ("clip_after_parallel", "clip the gradient norm first")])
def test_train_step_mistakes(flag, match):
    fails(C.check_train_step, C._mistake(flag), match, device="cpu")


def test_train_step_without_update_and_wrong_return():
    def no_step(sae, opt, x):
        out = sae(x); out.total.backward(); opt.zero_grad(); return out.total.item()
    fails(C.check_train_step, no_step, "did not change the parameters", device="cpu")
    def returns_after(sae, opt, x):
        S.train_step(sae, opt, x); return sae(x).total.item()
    fails(C.check_train_step, returns_after, "before the update", device="cpu")


# ----- final exercise (needs the tiny LM: one small inspector for all)

@pytest.fixture(scope="module")
def ins():
    torch.set_num_threads(1)
    from switch_sae.inspector import Inspector, sample_contexts, demo_sae
    from switch_sae.activations import load_lm
    lm = load_lm("tiny")
    return Inspector(demo_sae("cpu"), lm, "blocks.1.hook_resid_pre", sample_contexts(lm, n=12))


def test_final_exercise_solutions(ins):
    C.check_expert_top_tokens(S.expert_top_tokens, ins)
    C.check_nearest_other_expert(S.nearest_other_expert, ins)
    C.check_space_expert(S.space_expert(ins), ins)


def test_final_exercise_mistakes(ins):
    fails(C.check_expert_top_tokens, blank, "is not written yet", inspector=ins)
    def all_tokens(tokens, expert, e, n=5):
        c = torch.bincount(tokens.flatten()); v, t = c.topk(n)
        return [(int(a), int(b)) for a, b in zip(t, v)]
    fails(C.check_expert_top_tokens, all_tokens, "routed to expert e", inspector=ins)

    def with_own_expert(W, E, j, n=5):
        U = W / W.norm(dim=-1, keepdim=True); cos = U @ U[j]; cos[j] = -2
        c, i = cos.topk(n); return [(int(a), float(b)) for a, b in zip(i, c)]
    fails(C.check_nearest_other_expert, with_own_expert, "own expert", inspector=ins)
    def itself(W, E, j, n=5):
        U = W / W.norm(dim=-1, keepdim=True); c, i = (U @ U[j]).topk(n); return [(int(a), float(b)) for a, b in zip(i, c)]
    fails(C.check_nearest_other_expert, itself, "its own nearest neighbour", inspector=ins)
    def dot_not_cos(W, E, j, n=5):
        M = W.shape[0] // E; s = (W * 3) @ (W[j] * 3); s[(j // M) * M:(j // M + 1) * M] = -99
        c, i = s.topk(n); return [(int(a), float(b)) for a, b in zip(i, c)]
    fails(C.check_nearest_other_expert, dot_not_cos, "cosine", inspector=ins)

    fails(lambda a, inspector: C.check_space_expert(a, inspector), None, "set SPACE_EXPERT", inspector=ins)
    wrong = (S.space_expert(ins) + 1) % ins.E
    fails(lambda a, inspector: C.check_space_expert(a, inspector), wrong, "another expert gets more", inspector=ins)
