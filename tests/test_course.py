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


@pytest.mark.parametrize("check", [C.check_route, C.check_topk, C.check_switch_forward, C.check_act_scale_for,
                                   C.check_scaled_forward, C.check_lb_loss, C.check_gate_grad, C.check_train_step, C.check_fve,
                                   C.check_group_by_expert, C.check_grouped_encode, C.check_sparse_decode_backward,
                                   C.check_encoder_flops])
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


def test_switch_forward_detached_gate():
    wrong = lambda x, We, Wd, b, Wr, br, k: C._switch_variant(x, We, Wd, b, Wr.detach(), br, k)
    fails(C.check_switch_forward, wrong, "no gradient to W_router", device="cpu")


# ----- 4. scale in, scale out

def test_act_scale_solutions():
    C.check_act_scale_for(S.act_scale_for, device="cpu")
    C.check_scaled_forward(S.scaled_forward, device="cpu")


@pytest.mark.parametrize("wrong, match", [
    (lambda x: (x.pow(2).sum(-1).mean() / x.shape[-1]).sqrt(), "inverse"),
    (lambda x: x.shape[-1] / x.pow(2).sum(-1).mean(), "square root"),
    (lambda x: x.shape[-1] ** 0.5 / x.norm(dim=-1).mean(), "mean SQUARED norm"),
    (lambda x: (x.shape[-1] / (x - x.mean(0)).pow(2).sum(-1).mean()).sqrt(), "do not centre"),
    (lambda x: (1 / x.pow(2).sum(-1).mean()).sqrt(), "mean squared norm d"),
    (lambda x: "one", "one number"),
])
def test_act_scale_mistakes(wrong, match):
    fails(C.check_act_scale_for, wrong, match, device="cpu")


@pytest.mark.parametrize("wrong, match", [
    (lambda x, *a: S.switch_forward(x * a[-1], *a[:-1]), "did not scale out"),
    (lambda x, *a: S.switch_forward(x, *a[:-1]) / a[-1], "did not scale in"),
    (lambda x, *a: S.switch_forward(x, *a[:-1]), "did not scale at all"),
    (lambda x, *a: S.switch_forward(x / a[-1], *a[:-1]) * a[-1], "not the other way round"),
])
def test_scaled_forward_mistakes(wrong, match):
    fails(C.check_scaled_forward, wrong, match, device="cpu")


# ----- 5. load balancing

def test_lb_loss_solution():
    C.check_lb_loss(S.lb_loss, device="cpu")


def _f(p, e): return torch.bincount(e, minlength=p.shape[-1]).to(p.dtype) / e.numel()

@pytest.mark.parametrize("wrong, match", [
    (lambda p, e: (_f(p, e) * p.mean(0)).sum(), "should be 1 for uniform routing, got 0.25"),
    (lambda p, e: p.shape[-1] * (p.mean(0) * p.mean(0)).sum(), "not the mean probability"),
    (lambda p, e: p.shape[-1] * (_f(p, e) * p.mean(0)), "return a scalar"),
    (lambda p, e: p.shape[-1] * (_f(p, e) * p.mean(0).detach()).sum(), "no gradient"),
    (lambda p, e: float(p.shape[-1] * (_f(p, e) * p.mean(0)).sum()), "return a tensor"),
    (lambda p, e: p.shape[-1] * (torch.bincount(e, minlength=p.shape[-1]).float() * p.mean(0)).sum(), "not a count and a sum: one of yours"),
    (lambda p, e: p.shape[-1] * (_f(p, e) * p.sum(0)).sum(), "not a count and a sum: one of yours"),   # the same value: one message
    (lambda p, e: p.shape[-1] * (torch.bincount(e, minlength=p.shape[-1]).float() * p.sum(0)).sum(), "not a count and a sum: both of yours"),
    (lambda p, e: p.shape[-1] * (p.mean(0) * _f(p, e) + 0.01 * p.mean(0) ** 2).sum(), "uniform routing, got 1.01"),
    (lambda p, e: p.shape[-1] * (_f(p, e) * p.median(0).values).sum(), "expected"),      # right at uniform only
])
def test_lb_loss_mistakes(wrong, match):
    fails(C.check_lb_loss, wrong, match, device="cpu")


# ----- 6. what the load-balancing loss's value says

def test_lb_routings_solution(capsys):
    C.check_lb_routings(*S.lb_routings())
    below, collapsed = S.lb_routings()
    assert C.lib_lb_loss(*below) < 1 and abs(C.lib_lb_loss(*collapsed) - 1) < 0.05
    assert "✓ lb_routings" in capsys.readouterr().out


def test_lb_routings_mistakes():
    below, collapsed = S.lb_routings()
    uniform = (torch.tensor([[0.9, 0.1], [0.2, 0.8]]), torch.tensor([0, 1]))       # f uniform: L = 1 whatever P
    fails(lambda a, b: C.check_lb_routings(a, b), uniform, "is 1 whenever f is uniform", b=collapsed)
    confident = (torch.tensor([[1.0, 0.0, 0.0]] * 5), torch.zeros(5, dtype=torch.long))   # collapsed and certain: L = E
    fails(lambda a, b: C.check_lb_routings(a, b), below, "reaches E = 3", b=confident)
    not_top1 = (below[0], 1 - below[1])
    fails(lambda a, b: C.check_lb_routings(a, b), not_top1, "most probable expert", b=collapsed)
    unnormalised = (below[0] * 2, below[1])
    fails(lambda a, b: C.check_lb_routings(a, b), unnormalised, "summing to 1", b=collapsed)
    fails(lambda a, b: C.check_lb_routings(a, b), below, "same expert", b=uniform)


# ----- 7. the gate's gradient

def test_gate_grad_solution():
    C.check_gate_grad(S.gate_grad, device="cpu")


@pytest.mark.parametrize("wrong, match", [
    (lambda x, y, p, b: -((x - p[:, None] * y - b) * y).sum(-1), "factor 2"),
    (lambda x, y, p, b: 2 * ((x - p[:, None] * y - b) * y).sum(-1), "sign is flipped"),
    (lambda x, y, p, b: -2 * ((x - p[:, None] * y) * y).sum(-1), "subtract b_dec"),
    (lambda x, y, p, b: -2 * (x * y).sum(-1), "residual x - x_hat"),
    (lambda x, y, p, b: -2 * ((x - p[:, None] * y - b) * y).sum(-1) / len(x), "not divided by B"),
    (lambda x, y, p, b: -2 * ((x - p[:, None] * y - b) * y).mean(-1), "differs from autograd"),
])
def test_gate_grad_mistakes(wrong, match):
    fails(C.check_gate_grad, wrong, match, device="cpu")


# ----- 8. your Switch SAE

def test_my_sae_solution():
    C.check_my_sae(S.MySwitchSAE, device="cpu")


def _my(forward):
    "A copy of the solution's module with a planted mistake in `forward`."
    return type("Wrong", (S.MySwitchSAE,), {"forward": forward})

def _parts(self, x, detach_gate=False):
    xs = x * self.act_scale
    probs, expert, _ = S.route(xs, self.W_router, self.b_router)
    Wr = self.W_router.detach() if detach_gate else self.W_router
    return xs, probs, expert, S.switch_forward(xs, self.W_enc, self.W_dec, self.b_dec, Wr, self.b_router, self.k)

def _no_scale_out(self, x):
    xs, probs, expert, x_hat = _parts(self, x); return x_hat, (xs - x_hat).pow(2).sum(-1).mean(), S.lb_loss(probs, expert)
def _raw_l2(self, x):
    xs, probs, expert, x_hat = _parts(self, x); x_hat = x_hat / self.act_scale
    return x_hat, (x - x_hat).pow(2).sum(-1).mean(), S.lb_loss(probs, expert)
def _detached_gate(self, x):
    xs, probs, expert, x_hat = _parts(self, x, detach_gate=True)
    return x_hat / self.act_scale, (xs - x_hat).pow(2).sum(-1).mean(), S.lb_loss(probs, expert)
def _detached_lb(self, x):
    xs, probs, expert, x_hat = _parts(self, x)
    return x_hat / self.act_scale, (xs - x_hat).pow(2).sum(-1).mean(), S.lb_loss(probs.detach(), expert)
def _two(self, x):
    xs, probs, expert, x_hat = _parts(self, x); return x_hat / self.act_scale, (xs - x_hat).pow(2).sum(-1).mean()

@pytest.mark.parametrize("forward, match", [
    (_no_scale_out, "scale it out"), (_raw_l2, "raw units"), (_detached_gate, "gate p_i is detached"),
    (_detached_lb, "router's gradient differs"), (_two, "three things"),
])
def test_my_sae_mistakes(forward, match):
    fails(C.check_my_sae, _my(forward), match, device="cpu")


def test_my_sae_blank():
    def forward(self, x): raise NotImplementedError
    fails(C.check_my_sae, _my(forward), "MySwitchSAE is not written yet", "show_solution('MySwitchSAE')", device="cpu")


# ----- 9. training step

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
        _, l2, lb = sae(x); loss = l2 + sae.lb_alpha * sae.d_in * lb; loss.backward(); opt.zero_grad(); return loss.item()
    fails(C.check_train_step, no_step, "did not change the parameters", device="cpu")
    def returns_after(sae, opt, x):
        S.train_step(sae, opt, x); _, l2, lb = sae(x); return (l2 + sae.lb_alpha * sae.d_in * lb).item()
    fails(C.check_train_step, returns_after, "before the update", device="cpu")


# ----- 10. training your Switch SAE beside the library's (planted mistakes in copies of the solution)

def test_my_training_solution(capsys):
    res = C.check_my_training(S.MySwitchSAE, S.train_my_sae, device="cpu")
    assert "✓ your Switch SAE" in capsys.readouterr().out
    assert res["yours"]["purity"] > 0.9 and res["yours"]["max_load"] < 1.3


def _train_with(**patch):
    "The solution's train_my_sae with some of the functions it calls replaced."
    def train(sae, batches, steps, lr):
        old = {k: getattr(S, k) for k in patch}
        for k, v in patch.items(): setattr(S, k, v)
        try: return S.train_my_sae(sae, batches, steps, lr)
        finally:
            for k, v in old.items(): setattr(S, k, v)
    return train

@pytest.mark.parametrize("cls, train, match", [
    (_my(_detached_gate), S.train_my_sae, "gate p_i is detached"),
    (S.MySwitchSAE, _train_with(train_step=lambda sae, opt, x: C.reference_step(sae, opt, x, lb=False)), "routing collapsed"),
    (S.MySwitchSAE, _train_with(act_scale_for=lambda x: 1.0), "act_scale is 1"),
])
def test_my_training_mistakes(cls, train, match):
    fails(C.check_my_training, cls, match, train=train, device="cpu")


# ----- 11-12. evaluation

def test_fve_solution():
    C.check_fve(S.fve, device="cpu")


@pytest.mark.parametrize("wrong, match", [
    (lambda x, xh: 1 - (x - xh).pow(2).sum() / x.pow(2).sum(), "sum ||x - mean(x)||^2"),
    (lambda x, xh: (x - xh).pow(2).sum() / (x - x.mean(0)).pow(2).sum(), "left unexplained"),
    (lambda x, xh: 1 - ((x - xh).pow(2).sum(0) / (x - x.mean(0)).pow(2).sum(0)).mean(), "one FVE per coordinate"),
    (lambda x, xh: 1 - (x - xh).pow(2).sum() / (xh - xh.mean(0)).pow(2).sum(), "not of x_hat"),
])
def test_fve_mistakes(wrong, match):
    fails(C.check_fve, wrong, match, device="cpu")


@pytest.fixture(scope="module")
def lm():
    from switch_sae import tiny_lm
    return tiny_lm.load()

def test_spliced_ce_solution(lm):
    C.check_spliced_ce(S.spliced_ce, lm)

def _ce_with_bos_replaced(lm, tokens, hook, reconstruct):
    def splice(act, hook=None): return reconstruct(act.reshape(-1, act.shape[-1])).reshape(act.shape)
    logits = lm.run_with_hooks(tokens, return_type="logits", fwd_hooks=[(hook, splice)])
    return -F.log_softmax(logits[:, :-1], -1).gather(-1, tokens[:, 1:, None]).mean().item()

def _ce_summed(lm, tokens, hook, reconstruct):
    return S.spliced_ce(lm, tokens, hook, reconstruct) * tokens.shape[0] * (tokens.shape[1] - 1)

@pytest.mark.parametrize("wrong, match", [
    (_ce_with_bos_replaced, "BOS position too"), (_ce_summed, "do not sum"),
    (lambda lm, t, h, r: S.spliced_ce(lm, t, h, lambda a: 0.5 * a), "identity"),
])
def test_spliced_ce_mistakes(lm, wrong, match):
    fails(C.check_spliced_ce, wrong, match, lm=lm)


# ----- 13-14. inside a trained Switch SAE (needs the tiny LM: one small inspector for all)

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


def test_duplicated_question(ins):
    W = ins.sae.W_dec.detach().cpu()
    right = S.n_duplicated(W, ins.E)
    C.check_duplicated(right, ins)
    from switch_sae.geometry import duplicated_features
    assert right == duplicated_features(W, ins.E)["n_duplicated"]
    check = lambda a, inspector: C.check_duplicated(a, inspector)
    fails(check, None, "set N_DUPLICATED", inspector=ins)
    fails(check, right + 1, "is not the count", inspector=ins)
    U = W / W.norm(dim=-1, keepdim=True); Cos = U @ U.T; Cos.fill_diagonal_(-2)
    any_expert = int((Cos.max(1).values >= 0.9).sum())
    if any_expert != right: fails(check, any_expert, "inside the latent's own expert", inspector=ins)


# ----- 15-18. what makes a Switch SAE fast

def test_fast_exercises_solutions(capsys):
    C.check_group_by_expert(S.group_by_expert, device="cpu")
    C.check_grouped_encode(S.grouped_encode, device="cpu")
    C.check_sparse_decode_backward(S.sparse_decode_backward, device="cpu")
    C.check_encoder_flops(S.encoder_flops)
    assert capsys.readouterr().out.count("✓") == 4


def _inv(order): return torch.argsort(order)

@pytest.mark.parametrize("wrong, match", [
    (lambda e, E: (e.sort().values, torch.bincount(e, minlength=E), _inv(e.sort().indices)), "sorted expert ids"),
    (lambda e, E: (torch.argsort(e, descending=True), torch.bincount(e, minlength=E), _inv(torch.argsort(e, descending=True))), "decreasing"),
    (lambda e, E: (torch.argsort(e), torch.bincount(e), _inv(torch.argsort(e))), "minlength"),
    (lambda e, E: (torch.argsort(e), torch.bincount(e, minlength=E).cumsum(0), _inv(torch.argsort(e))), "cumulative"),
    (lambda e, E: (torch.argsort(e), torch.bincount(e, minlength=E), torch.argsort(e)), "inverse is order itself"),
    (lambda e, E: (torch.argsort(e), torch.bincount(e, minlength=E).float(), _inv(torch.argsort(e))), "floats"),
    (lambda e, E: (torch.argsort(e), torch.bincount(e, minlength=E)), "three things"),
])
def test_group_by_expert_mistakes(wrong, match):
    fails(C.check_group_by_expert, wrong, match, device="cpu")


def _dense_then_pick(x, W, b, e, E, k):
    N, d = W.shape; M = N // E
    pre = ((x - b) @ W.T).view(len(x), E, M)[torch.arange(len(x)), e]     # all N latents computed, then the expert's kept
    v, i = pre.topk(k); return v.relu(), i + e[:, None] * M

def _global_topk(x, W, b, e, E, k):
    v, i = ((x - b) @ W.T).topk(k); return v.relu(), i

@pytest.mark.parametrize("wrong, match", [
    (lambda *a: C._encode_variant(*a, unsort=False), "inverse permutation"),
    (lambda *a: C._encode_variant(*a, offset=False), "local to the expert"),
    (lambda *a: C._encode_variant(*a, sub_bdec=False), "subtract b_dec"),
    (lambda *a: C._encode_variant(*a, relu=False), "ReLU"),
    (_dense_then_pick, "4.0 times the"),
    (_global_topk, "latents of another expert"),
    (lambda *a: C._encode_variant(*a)[0], "(acts, indices)"),
])
def test_grouped_encode_mistakes(wrong, match):
    fails(C.check_grouped_encode, wrong, match, device="cpu")


def _assign_rows(g, a, i, W):
    ga = torch.einsum("bkd,bd->bk", W[i], g); gw = torch.zeros_like(W)
    gw[i.reshape(-1)] = (a[..., None] * g[:, None]).reshape(-1, W.shape[1])   # duplicates: the last one wins
    return ga, gw

def _unweighted(g, a, i, W):
    ga = torch.einsum("bkd,bd->bk", W[i], g)
    return ga, torch.zeros_like(W).index_add_(0, i.reshape(-1), g[:, None].expand(*i.shape, W.shape[1]).reshape(-1, W.shape[1]))

def _dense_backward(g, a, i, W):
    z = torch.zeros(len(a), W.shape[0]).scatter(1, i, a)
    return (g @ W.T).gather(1, i), z.T @ g

@pytest.mark.parametrize("wrong, match", [
    (_assign_rows, "index_add_"),
    (_unweighted, "times that latent's activation"),
    (_dense_backward, "all N = 48 latents"),
    (lambda g, a, i, W: (S.sparse_decode_backward(g, a, i, W)[0] * a, S.sparse_decode_backward(g, a, i, W)[1]), "multiplied by the activations"),
    (lambda g, a, i, W: (S.sparse_decode_backward(g, a, i, W)[0], a[..., None] * g[:, None]), "[N, d]"),
    (lambda g, a, i, W: (-S.sparse_decode_backward(g, a, i, W)[0], S.sparse_decode_backward(g, a, i, W)[1]), "dot product"),
])
def test_sparse_decode_backward_mistakes(wrong, match):
    fails(C.check_sparse_decode_backward, wrong, match, device="cpu")


@pytest.mark.parametrize("wrong, match", [
    (lambda d, N, E: (2 * N * d, 2 * (N // E) * d), "left out the router"),
    (lambda d, N, E: (N * d, E * d + (N // E) * d), "multiply-add is 2 FLOPs"),
    (lambda d, N, E: (2 * N * d, 2 * E * d + 2 * N * d), "M = N / E"),
    (lambda d, N, E: 2 * N * d, "(dense, switch)"),
])
def test_encoder_flops_mistakes(wrong, match):
    fails(C.check_encoder_flops, wrong, match)


# ----- the learner's functions from one notebook to the next

def route(x, W_router, b_router):          # a learner's functions, defined in a file so that their source can be read
    probs = ((x - b_router) @ W_router.T).softmax(-1)
    gate, expert = probs.max(-1)
    return probs, expert, gate

def topk(pre, k):
    v, i = pre.topk(k, dim=-1)
    return v.relu(), i


def test_save_and_load_mine(tmp_path, capsys):
    path = str(tmp_path / C.MINE)
    with pytest.raises(FileNotFoundError, match="01_router_and_topk") as e:
        C.load_mine("route", "topk", path=path)
    assert "SOLUTIONS = True" in str(e.value)
    C.save_mine(route, topk, path=path, device="cpu")
    assert "✓ route" in capsys.readouterr().out
    r, t = C.load_mine("route", "topk", path=path)
    assert r is not route and r.__name__ == "route"                           # read back from the file
    x, W, b = torch.randn(5, 4), torch.randn(3, 4), torch.randn(4)
    assert torch.equal(r(x, W, b)[1], route(x, W, b)[1])
    assert C.load_mine("topk", solutions=True) is S.topk
    assert C.save_mine(route, solutions=True, path=path) is None


def test_save_mine_refuses_a_wrong_function(tmp_path):
    path = str(tmp_path / C.MINE)
    C.save_mine(topk, path=path, device="cpu")
    def topk_(pre, k): return pre.topk(k, dim=-1)
    topk_.__name__ = "topk"
    with pytest.raises(AssertionError, match="ReLU"):
        C.save_mine(topk_, path=path, device="cpu")
    assert "relu" in C._read_mine(path)["topk"]                              # the checked one is kept
    with pytest.raises(ValueError, match="no exercise"):
        C.save_mine(_unweighted, path=path)


def test_exercises_do_not_hand_over_the_answer():
    "No line of a worked solution's body appears in the learner's notebooks (01-06)."
    import inspect, json
    from pathlib import Path
    course = Path(__file__).resolve().parents[1] / "nbs" / "course"
    text = "".join("".join(c["source"]) for p in sorted(course.glob("0[1-9]_*.ipynb"))
                   for c in json.loads(p.read_text())["cells"])
    names = ("route", "topk", "switch_forward", "act_scale_for", "scaled_forward", "lb_loss", "lb_routings", "gate_grad",
             "MySwitchSAE", "train_step", "train_my_sae", "fve", "spliced_ce", "group_by_expert", "grouped_encode",
             "sparse_decode_backward", "encoder_flops", "expert_top_tokens", "nearest_other_expert", "n_duplicated")
    for name in names:
        body = inspect.getsource(getattr(S, name)).split("\n")[2:]
        for line in body:
            code = line.split("#")[0].strip()
            uses_another = any(f"{n}(" in code for n in names)     # calling an exercise's function is not its answer
            if len(code) > 20 and not uses_another and not code.startswith(("return", "for ", "with ", "N, d =", "M = N", "E = ", "def ", '"')):
                assert code not in text, f"the course notebooks show a line of the solution of {name}: {code!r}"


def test_real_model_comparison_holds_with_act_scale():
    "Course 02's comparison with the library on the tiny LM holds for a model whose act_scale is not 1 (scale in, scale out)."
    from switch_sae import tiny_lm
    from switch_sae.activations import lm_activations, load_lm
    from switch_sae.inspector import demo_sae
    sae, lm = demo_sae("cpu"), load_lm("tiny")
    acts = lm_activations(lm.model, tiny_lm.encode("Return the number of items in a container.")[None],
                          "blocks.1.hook_resid_pre")[0, 1:]
    s = 0.37                                   # the same model in units s times the raw ones: same reconstruction
    with torch.no_grad():
        sae.b_dec.mul_(s / sae.act_scale); sae.b_router.mul_(s / sae.act_scale); sae.W_router.mul_(sae.act_scale / s)
        sae.act_scale.fill_(s)
        lib = sae(acts).x_hat
        mine = S.scaled_forward(acts, sae.W_enc, sae.W_dec, sae.b_dec, sae.W_router, sae.b_router, sae.cfg.k, sae.act_scale)
        unscaled = S.switch_forward(acts, sae.W_enc, sae.W_dec, sae.b_dec, sae.W_router, sae.b_router, sae.cfg.k)
    assert torch.allclose(mine, lib, atol=1e-4)
    assert not torch.allclose(unscaled, lib, atol=1e-2)     # without scaling in and out, the comparison fails
