"""Feature-geometry metrics against brute force, on planted duplicates and planted clusters."""
import math
import pytest
import torch
from switch_sae.geometry import (expert_ids, unit_rows, mean_cosines, nearest_neighbours, duplicated_features,
                                 expert_similarity, encoder_clustering, geometry_report, plot_geometry)


def brute(W, E):
    U = unit_rows(W.double())
    C = U @ U.T
    ex = expert_ids(len(W), E)
    same = ex[:, None] == ex[None]
    eye = torch.eye(len(W), dtype=torch.bool)
    return C, same, eye


@pytest.mark.parametrize("N, E, block", [(48, 4, 7), (64, 8, 64), (30, 3, 1000)])
def test_blockwise_matches_brute_force(N, E, block):
    W = torch.randn(N, 5, generator=torch.Generator().manual_seed(N))
    C, same, eye = brute(W, E)
    nb = nearest_neighbours(W, E, block=block)
    torch.testing.assert_close(nb.within_cos.double(), C.masked_fill(~same | eye, -math.inf).max(1).values, atol=1e-6, rtol=0)
    torch.testing.assert_close(nb.across_cos.double(), C.masked_fill(same, -math.inf).max(1).values, atol=1e-6, rtol=0)
    mc = mean_cosines(W, E)
    assert mc["within"] == pytest.approx(C[same & ~eye].mean().item(), abs=1e-6)
    assert mc["across"] == pytest.approx(C[~same].mean().item(), abs=1e-6)
    S = expert_similarity(W, E, block=block).double()
    M = N // E
    best = torch.stack([C.masked_fill(eye, -math.inf)[:, b * M:(b + 1) * M].max(1).values for b in range(E)], 1)
    want = torch.stack([best[a * M:(a + 1) * M].mean(0) for a in range(E)])
    torch.testing.assert_close(S, want, atol=1e-6, rtol=0)


def test_planted_duplicates_are_counted():
    g = torch.Generator().manual_seed(0)
    E, M, d = 4, 16, 64
    W = torch.randn(E * M, d, generator=g)
    W[M + 3] = W[2] + 0.01 * torch.randn(d, generator=g)       # expert 1 copies a latent of expert 0
    W[3 * M] = -W[5]                                            # opposite direction: not a duplicate
    W[7] = W[6] * 2                                             # same expert: not across experts
    d_ = duplicated_features(W, E, threshold=0.9, block=10)
    assert (d_["n_duplicated"], d_["n_pairs"]) == (2, 1)
    assert d_["frac_duplicated"] == pytest.approx(2 / (E * M))
    nb = nearest_neighbours(W, E)
    assert int(nb.across_idx[2]) == M + 3 and float(nb.within_cos[6]) == pytest.approx(1.0, abs=1e-6)


def test_encoder_clustering_on_planted_clusters():
    g = torch.Generator().manual_seed(1)
    E, M, d = 4, 20, 32
    centres = torch.randn(E, d, generator=g) * 3
    W = centres.repeat_interleave(M, 0) + torch.randn(E * M, d, generator=g)
    c = encoder_clustering(W, E)
    assert c["centroid_accuracy"] == 1.0 and c["nn_same_expert"] > 0.9
    assert c["nn_chance"] == pytest.approx((M - 1) / (E * M - 1)) and c["centroid_chance"] == 1 / E
    r = encoder_clustering(torch.randn(E * M, d, generator=g), E)      # no clusters: near chance
    assert r["centroid_accuracy"] < 0.6


def test_low_precision_and_report():
    from switch_sae import SwitchSAEConfig, SwitchSAE
    W = torch.randn(32, 8)
    a, b = nearest_neighbours(W, 4), nearest_neighbours(W.bfloat16(), 4)
    torch.testing.assert_close(a.across_cos, b.across_cos, atol=0.02, rtol=0)
    sae = SwitchSAE(SwitchSAEConfig(d_in=16, n_latents=64, n_experts=4, k=4, device="cpu"))
    r = geometry_report(sae)
    assert r["n_experts"] == 4 and 0 <= r["dup_frac_duplicated"] <= 1 and r["enc_centroid_chance"] == 0.25
    assert plot_geometry(sae) is not None
    with pytest.raises(ValueError, match="multiple"):
        expert_ids(10, 3)
