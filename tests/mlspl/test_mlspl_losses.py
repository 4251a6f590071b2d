"""MLSPL losses against formulas written out entry by entry (float64 numpy)."""
import numpy as np
import pytest
import torch

from harness.mlspl.losses import compute_loss

N, L, K = 6, 10, 2.9


def nl(x):
    return -np.log(x + 1e-5)


def reference(name, p, y, g=None):
    """Each loss as a double loop over entries, then / (N L), plus the regularisers."""
    n, n_classes = p.shape
    total = 0.0
    for i in range(n):
        for j in range(n_classes):
            pos = y[i, j] == 1
            if name in ("AN", "BCE"):
                total += nl(p[i, j]) if pos else nl(1 - p[i, j])
            elif name == "AN-LS":
                total += 0.9 * nl(p[i, j]) + 0.1 * nl(1 - p[i, j]) if pos else 0.9 * nl(1 - p[i, j]) + 0.1 * nl(p[i, j])
            elif name == "WAN":
                total += nl(p[i, j]) if pos else nl(1 - p[i, j]) / (n_classes - 1)
            elif name == "EPR":
                total += nl(p[i, j]) if pos else 0.0
            elif name == "ROLE":
                total += 0.5 * ((nl(p[i, j]) + nl(g[i, j])) if pos else 0.0)
                total += 0.5 * (g[i, j] * nl(p[i, j]) + (1 - g[i, j]) * nl(1 - p[i, j]))
                total += 0.5 * (p[i, j] * nl(g[i, j]) + (1 - p[i, j]) * nl(1 - g[i, j]))
    loss = total / (n * n_classes)
    if name == "EPR":
        loss += (p.sum(1).mean() - K) ** 2 / n_classes**2
    if name == "ROLE":
        loss += 0.5 * ((p.sum(1).mean() - K) ** 2 + (g.sum(1).mean() - K) ** 2) / n_classes**2
    return loss


def batch(seed):
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.001, 0.999, (N, L))
    g = rng.uniform(0.001, 0.999, (N, L))
    y = np.zeros((N, L))
    y[np.arange(N), rng.integers(0, L, N)] = 1
    return p, y, g


@pytest.mark.parametrize("name", ["BCE", "AN", "AN-LS", "WAN", "EPR", "ROLE"])
def test_loss_matches_entrywise_formula(name):
    for seed in range(3):
        p, y, g = batch(seed)
        if name == "BCE":
            y = (np.random.default_rng(seed + 9).random((N, L)) < 0.3).astype(float)
        got = compute_loss(name, torch.tensor(p), torch.tensor(y), torch.tensor(g), k=K)
        assert float(got) == pytest.approx(reference(name, p, y, g), rel=1e-10)


@pytest.mark.parametrize("name", ["AN", "AN-LS", "WAN", "EPR", "ROLE"])
def test_leading_grid_dimension_sums_independent_problems(name):
    problems = [batch(seed) for seed in range(3)]
    stacked = [torch.tensor(np.stack(x)) for x in zip(*problems)]
    together = compute_loss(name, stacked[0], stacked[1], stacked[2], k=K)
    apart = sum(float(compute_loss(name, torch.tensor(p), torch.tensor(y), torch.tensor(g), k=K))
                for p, y, g in problems)
    assert float(together) == pytest.approx(apart, rel=1e-10)


def test_role_gradients_flow_only_where_they_should():
    p_np, y_np, g_np = batch(7)
    p = torch.tensor(p_np, requires_grad=True)
    g = torch.tensor(g_np, requires_grad=True)
    compute_loss("ROLE", p, torch.tensor(y_np), g, k=K).backward()
    # f learns from: its observed positives, BCE against (fixed) g, its own EPR term.
    expected_p = (0.5 * np.where(y_np == 1, -1 / (p_np + 1e-5), 0)
                  + 0.5 * (-g_np / (p_np + 1e-5) + (1 - g_np) / (1 - p_np + 1e-5))) / (N * L) \
        + 0.5 * 2 * (p_np.sum(1).mean() - K) / N / L**2
    # g learns from: its observed positives, BCE against (fixed) f, its own EPR term.
    expected_g = (0.5 * np.where(y_np == 1, -1 / (g_np + 1e-5), 0)
                  + 0.5 * (-p_np / (g_np + 1e-5) + (1 - p_np) / (1 - g_np + 1e-5))) / (N * L) \
        + 0.5 * 2 * (g_np.sum(1).mean() - K) / N / L**2
    np.testing.assert_allclose(p.grad.numpy(), expected_p, rtol=1e-9)
    np.testing.assert_allclose(g.grad.numpy(), expected_g, rtol=1e-9)


def test_unobserved_entries_get_no_gradient_in_epr_positive_term():
    p_np, y_np, _ = batch(3)
    p = torch.tensor(p_np, requires_grad=True)
    # k at the batch mean: the penalty's gradient vanishes, what is left is the positive term
    loss = compute_loss("EPR", p, torch.tensor(y_np), k=float(p_np.sum(1).mean()))
    loss.backward()
    assert np.all(p.grad.numpy()[y_np == 0] == pytest.approx(0, abs=1e-12))
    assert np.all(p.grad.numpy()[y_np == 1] < 0)


def test_unknown_loss():
    with pytest.raises(ValueError, match="unknown loss"):
        compute_loss("PR", torch.rand(2, 3), torch.zeros(2, 3))
