import numpy as np
import pytest
import torch

from nnunet_aneurysm.losses.asymmetric import AsymmetricLoss
from nnunet_aneurysm.losses.auc_margin import AUCMarginLoss
from nnunet_aneurysm.losses.balancing import SoftOptimalUncertaintyWeighting, UncertaintyWeighting
from nnunet_aneurysm.losses.tversky import TverskyCELoss


def _logits_for(labels, k, confidence=10.0):
    return torch.nn.functional.one_hot(labels[:, 0], k).permute(0, 4, 1, 2, 3).float() * confidence


def test_tversky_punishes_missed_voxels_more_than_spurious_ones():
    target = torch.zeros(1, 1, 4, 4, 4, dtype=torch.long)
    target[..., :2, :, :] = 1  # half the volume is vessel
    loss = TverskyCELoss(alpha=0.7, beta=0.3, weight_ce=0.0)
    missed = target.clone()
    missed[..., 0, :, :] = 0  # a quarter of the vessel predicted as background (false negatives)
    spurious = target.clone()
    spurious[..., 2, :, :] = 1  # the same number of background voxels predicted as vessel (false positives)
    assert loss(_logits_for(missed, 2), target) > loss(_logits_for(spurious, 2), target)
    assert loss(_logits_for(target, 2), target).item() < 1e-3


def test_tversky_with_equal_weights_is_dice():
    torch.manual_seed(0)
    logits, target = torch.randn(2, 3, 4, 4, 4), torch.randint(0, 3, (2, 1, 4, 4, 4))
    index = TverskyCELoss(0.5, 0.5).tversky_index(logits, target)
    probs = logits.softmax(1)
    onehot = torch.nn.functional.one_hot(target[:, 0], 3).permute(0, 4, 1, 2, 3).float()
    dice = 2 * (probs * onehot).sum((0, 2, 3, 4)) / (probs.sum((0, 2, 3, 4)) + onehot.sum((0, 2, 3, 4)))
    torch.testing.assert_close(index, dice, rtol=1e-4, atol=1e-4)


def test_asymmetric_loss_is_a_mean_and_ignores_easy_negatives():
    asl = AsymmetricLoss(clip=0.05)
    targets = torch.zeros(4, 14)
    easy = torch.full((4, 14), -5.0)  # sigmoid ~ 0.0067 < clip: contributes nothing
    assert asl(easy, targets).item() == pytest.approx(0.0, abs=1e-7)
    logits = torch.randn(4, 14)
    doubled = torch.cat([logits, logits]), torch.cat([targets, targets])
    assert asl(*doubled).item() == pytest.approx(asl(logits, targets).item(), rel=1e-5)  # mean, not sum
    targets[:, 0] = 1
    assert asl(torch.full((4, 14), -3.0), targets) > asl(torch.full((4, 14), 3.0) * torch.tensor([1.0] + [-1] * 13),
                                                         targets)


def test_uncertainty_weighting_learns_and_uwso_is_bounded():
    uw = UncertaintyWeighting(["a", "b"])
    total, weights = uw({"a": torch.tensor(2.0), "b": torch.tensor(0.5)})
    assert weights == {"a": 1.0, "b": 1.0} and total.item() == pytest.approx(2.5)
    total.backward()
    assert uw.log_vars.grad is not None and uw.log_vars.grad[0] < uw.log_vars.grad[1]
    so = SoftOptimalUncertaintyWeighting(["a", "b", "c"])
    _, w = so({"a": torch.tensor(1e-7), "b": torch.tensor(1.0), "c": torch.tensor(3.0)})
    assert sum(w.values()) == pytest.approx(3.0)
    assert w["a"] > w["b"] > w["c"] and w["c"] > 0.05  # the floor keeps the near-zero term from taking all


def _saddle(h: np.ndarray, y: np.ndarray, margin: float):
    """Closed form per label: a, b = class means, alpha = (m - gap)_+, F = p(1-p)(var+ + var- + alpha^2)."""
    out = []
    for k in range(h.shape[1]):
        pos, neg = h[y[:, k] == 1, k], h[y[:, k] == 0, k]
        p = len(pos) / len(h)
        alpha = max(0.0, margin - (pos.mean() - neg.mean()))
        out.append((pos.mean(), neg.mean(), alpha, p * (1 - p) * (pos.var() + neg.var() + alpha**2)))
    return np.array(out)


@pytest.mark.parametrize("margin", [1.0, 0.1])
def test_auc_margin_descent_ascent_reaches_the_closed_form_saddle_point(margin):
    g = torch.Generator().manual_seed(0)
    y = (torch.rand(64, 3, generator=g) < 0.3).float()
    logits = torch.randn(64, 3, generator=g) + 3 * y  # separated scores: at margin 0.1 alpha* is 0
    loss = AUCMarginLoss(3, margin, prior_momentum=None)
    optimizer = torch.optim.SGD(loss.parameters(), lr=0.5)
    for _ in range(3000):
        optimizer.zero_grad()
        value = loss(logits, y)
        value.backward()
        optimizer.step()
        loss.ascend(lr=0.5 * 3)  # the loss is a mean over 3 labels; undo that for the dual step size
    expected = _saddle(torch.sigmoid(logits).numpy(), y.numpy(), margin)
    np.testing.assert_allclose(loss.a.detach().numpy(), expected[:, 0], atol=1e-3)
    np.testing.assert_allclose(loss.b.detach().numpy(), expected[:, 1], atol=1e-3)
    np.testing.assert_allclose(loss.alpha.numpy(), expected[:, 2], atol=1e-3)
    np.testing.assert_allclose(float(loss(logits, y).detach()), expected[:, 3].mean(), atol=1e-4)
    assert (expected[:, 2] > 0).all() == (margin == 1.0)


def test_auc_margin_training_ranks_positives_above_negatives():
    from sklearn.metrics import roc_auc_score

    g = torch.Generator().manual_seed(1)
    x = torch.randn(256, 2, generator=g)
    y = ((x[:, :1] - 0.5 * x[:, 1:]) > 0.8).float()  # ~20 % positives, linearly separable
    model = torch.nn.Linear(2, 1)
    torch.nn.init.constant_(model.weight, 0.0)
    model.weight.data[0, 1] = 1.0  # starts on an uninformative direction
    before = roc_auc_score(y.numpy(), model(x).detach().numpy())
    loss = AUCMarginLoss(1)
    optimizer = torch.optim.SGD([*model.parameters(), *loss.parameters()], lr=0.1)
    for _ in range(400):
        batch = torch.randint(0, 256, (8,), generator=g)  # small batches, often without a positive
        optimizer.zero_grad()
        loss(model(x[batch]), y[batch]).backward()
        optimizer.step()
        loss.ascend(lr=0.1)
    after = roc_auc_score(y.numpy(), model(x).detach().numpy())
    assert before < 0.6 and after > 0.95
    assert 0.1 < float(loss.prior) < 0.35  # the running positive share approaches the true one
