import numpy as np
import pytest
import torch

from nnunet_aneurysm.losses.asymmetric import AsymmetricLoss
from nnunet_aneurysm.losses.auc_margin import AUCMarginLoss, ProximalTerm
from nnunet_aneurysm.losses.balancing import BoundedBelow, SoftOptimalUncertaintyWeighting, UncertaintyWeighting
from nnunet_aneurysm.losses.tversky import TverskyCELoss


def _logits_for(labels, k, confidence=10.0):
    return torch.nn.functional.one_hot(labels[:, 0], k).permute(0, 4, 1, 2, 3).float() * confidence


def test_tversky_punishes_missed_voxels_more_than_spurious_ones():
    target = torch.zeros(1, 1, 4, 4, 4, dtype=torch.long)
    target[..., :2, :, :] = 1  # half the volume is vessel
    loss = TverskyCELoss(fn_weight=0.7, fp_weight=0.3, weight_ce=0.0)
    missed = target.clone()
    missed[..., 0, :, :] = 0  # a quarter of the vessel predicted as background (false negatives)
    spurious = target.clone()
    spurious[..., 2, :, :] = 1  # the same number of background voxels predicted as vessel (false positives)
    assert loss(_logits_for(missed, 2), target) > loss(_logits_for(spurious, 2), target)
    assert loss(_logits_for(target, 2), target).item() < 1e-3


def test_tversky_weights_are_named_by_what_they_weigh():
    """The seeds disagree on which Greek letter weighs false negatives; the names cannot be inverted by copying."""
    import inspect

    parameters = inspect.signature(TverskyCELoss).parameters
    assert "fn_weight" in parameters and "fp_weight" in parameters
    assert not {"alpha", "beta"} & set(parameters)


def test_union_tversky_sees_the_vessel_mask_not_the_artery_classes():
    """A voxel given the wrong artery is a CE error, not a missed vessel: the union index stays perfect."""
    target = torch.zeros(1, 1, 4, 4, 4, dtype=torch.long)
    target[..., :2, :, :] = 1
    target[..., 2, :, :] = 2
    wrong_artery = target.clone()
    wrong_artery[target > 0] = 3 - target[target > 0]
    union = TverskyCELoss(union=True).tversky_index(_logits_for(wrong_artery, 3), target)
    per_class = TverskyCELoss(union=False).tversky_index(_logits_for(wrong_artery, 3), target)
    assert union.item() == pytest.approx(1.0, abs=1e-3) and per_class.max() < 0.01


def test_tversky_with_equal_weights_is_dice():
    torch.manual_seed(0)
    logits, target = torch.randn(2, 3, 4, 4, 4), torch.randint(0, 3, (2, 1, 4, 4, 4))
    index = TverskyCELoss(0.5, 0.5, union=False).tversky_index(logits, target)
    probs = logits.softmax(1)
    onehot = torch.nn.functional.one_hot(target[:, 0], 3).permute(0, 4, 1, 2, 3).float()
    dice = 2 * (probs * onehot).sum((0, 2, 3, 4)) / (probs.sum((0, 2, 3, 4)) + onehot.sum((0, 2, 3, 4)))
    torch.testing.assert_close(index, dice[1:], rtol=1e-4, atol=1e-4)


def test_asymmetric_loss_sums_labels_averages_samples_and_ignores_easy_negatives():
    asl = AsymmetricLoss(clip=0.05)
    targets = torch.zeros(4, 14)
    easy = torch.full((4, 14), -5.0)  # sigmoid ~ 0.0067 < clip: contributes nothing
    assert asl(easy, targets).item() == pytest.approx(0.0, abs=1e-7)
    logits = torch.randn(4, 14)
    doubled = torch.cat([logits, logits]), torch.cat([targets, targets])
    assert asl(*doubled).item() == pytest.approx(asl(logits, targets).item(), rel=1e-5)  # a mean over samples
    assert asl(logits[:, :7], targets[:, :7]) < asl(logits, targets)  # a sum over labels
    targets[:, 0] = 1
    assert asl(torch.full((4, 14), -3.0), targets) > asl(torch.full((4, 14), 3.0) * torch.tensor([1.0] + [-1] * 13),
                                                         targets)


def test_asymmetric_loss_still_pulls_a_confidently_wrong_positive():
    """d/dz of -log sigmoid(z) is sigmoid(z) - 1 = -1 at z = -20; log(p.clamp(1e-8)) gave 0 there."""
    logits = torch.tensor([[-20.0]], requires_grad=True)
    AsymmetricLoss(gamma_pos=0.0)(logits, torch.ones(1, 1)).backward()
    assert logits.grad.item() == pytest.approx(-1.0, abs=1e-6)


def test_bounded_segmentation_loss_keeps_uncertainty_weighting_finite():
    """nnU-Net's CE - Dice reaches -0.5 on an easy case: Kendall's weight then grew to 276 by step 20 and
    to infinity by step 30. Balanced as loss + 1 it settles at the optimum s = log(0.5)."""
    raw_segmentation = BoundedBelow(lambda: torch.tensor(-0.5), -1.0)
    uw = UncertaintyWeighting(["seg", "cls"])
    optimizer = torch.optim.SGD(uw.parameters(), lr=0.1)
    for _ in range(1000):
        optimizer.zero_grad()
        total, weights = uw({"seg": raw_segmentation(), "cls": torch.tensor(0.2)})
        total.backward()
        optimizer.step()
    assert torch.isfinite(uw.log_vars).all()
    assert weights["seg"] == pytest.approx(1 / 0.5, rel=1e-2) and weights["cls"] == pytest.approx(1 / 0.2, rel=1e-2)
    with pytest.raises(ValueError, match=">= 0"):
        uw({"seg": torch.tensor(-0.5), "cls": torch.tensor(0.2)})  # an unbounded term is refused, not balanced


def test_uwso_weights_are_the_softmax_of_the_running_inverse_losses():
    """w_i = n softmax(1 / (T L_i)) of the running means (the first step's means are its losses)."""
    so = SoftOptimalUncertaintyWeighting(["seg", "cls", "physics"], temperature=10.0, floor=0.0)
    losses = {"seg": 1.6, "cls": 0.05, "physics": 0.3}
    total, w = so({k: torch.tensor(v) for k, v in losses.items()})
    assert sum(w.values()) == pytest.approx(3.0)
    for a in losses:
        for b in losses:
            assert np.log(w[a] / w[b]) == pytest.approx((1 / losses[a] - 1 / losses[b]) / 10.0, rel=1e-4, abs=1e-4)
    assert total.item() == pytest.approx(sum(w[k] * v for k, v in losses.items()), rel=1e-5)
    _, without = so({"seg": torch.tensor(1.6), "cls": torch.tensor(0.2)})  # a skipped term gets weight 0
    assert without["physics"] == 0 and sum(without.values()) == pytest.approx(2.0)


# Loss magnitudes read from the demo's stage-2 training (issue 21): a batch with an aneurysm, and one without,
# whose segmentation term is CE alone.
POSITIVE_BATCH = {"seg": 1.15, "cls": 0.34, "physics": 0.42}
NEGATIVE_BATCH = {"seg": 0.0005, "cls": 0.29, "physics": 0.41}


def test_uwso_never_silences_the_heads_or_the_physics_on_a_batch_without_an_aneurysm():
    """On the batch softmax (the old formulation) this batch gave seg 3.0, cls 0.0, physics 0.0."""
    so = SoftOptimalUncertaintyWeighting(["seg", "cls", "physics"])
    for step in range(60):
        batch = NEGATIVE_BATCH if step % 5 in (1, 3) else POSITIVE_BATCH  # 40 % without an aneurysm
        _, w = so({k: torch.tensor(v) for k, v in batch.items()})
        assert min(w.values()) >= 0.5, (step, w)
    so.train(False)  # a frozen balancer (evaluation) uses the running means without updating them
    running = so.running.clone()
    so({k: torch.tensor(v) for k, v in NEGATIVE_BATCH.items()})
    assert torch.equal(so.running, running)


def test_uwso_floor_holds_whatever_the_running_means():
    so = SoftOptimalUncertaintyWeighting(["seg", "cls", "physics"], temperature=0.01, floor=0.1)
    _, w = so({"seg": torch.tensor(0.001), "cls": torch.tensor(2.0), "physics": torch.tensor(2.0)})
    assert min(w.values()) >= 0.1 - 1e-6 and sum(w.values()) == pytest.approx(3.0)
    restored = SoftOptimalUncertaintyWeighting(["seg", "cls", "physics"])
    restored.load_state_dict(so.state_dict())  # the running means travel with the checkpoint
    assert torch.equal(restored.running, so.running) and bool(restored.seen.all())


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
        loss.ascend(0.5)
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
        loss.ascend()
    after = roc_auc_score(y.numpy(), model(x).detach().numpy())
    assert before < 0.6 and after > 0.95
    assert 0.1 < float(loss.prior) < 0.35  # the running positive share approaches the true one


def test_proximal_term_pulls_weights_back_to_the_epoch_start():
    weight = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    proximal = ProximalTerm([weight], weight=0.5)
    with torch.no_grad():
        weight.add_(torch.tensor([0.4, 0.2]))  # the epoch's steps moved it
    weight.grad = torch.zeros(2)
    proximal.add_to_gradients()
    torch.testing.assert_close(weight.grad, torch.tensor([0.2, 0.1]))  # 0.5 * (w - w_ref)
    proximal.reset()
    weight.grad.zero_()
    proximal.add_to_gradients()
    assert weight.grad.abs().sum() == 0


def test_sparse_target_loss_rewards_finding_a_tiny_ball_and_is_bounded_below():
    """A 27-voxel ball in a 32^3 volume: missing it must cost far more than a few false voxels."""
    from nnunet_aneurysm.losses.sparse_targets import SparseTargetLoss

    target = torch.zeros(2, 1, 32, 32, 32, dtype=torch.long)
    target[0, 0, 10:13, 10:13, 10:13] = 5  # sample 1 has no target at all
    loss = SparseTargetLoss(foreground_weight=100.0)
    perfect = _logits_for(target, 14, 20.0)
    nothing = _logits_for(torch.zeros_like(target), 14, 20.0)
    wrong_class = _logits_for(torch.where(target > 0, 6, 0), 14, 20.0)
    extra = target.clone()
    extra[1, 0, 20, 20, 20:23] = 5  # three false voxels in the empty sample
    assert 0 <= loss(perfect, target).item() < 0.01
    assert loss(nothing, target) > 1.5 and loss(nothing, target) > 10 * loss(_logits_for(extra, 14, 20.0), target)
    assert loss(perfect, target) < loss(wrong_class, target) < loss(nothing, target)  # the class matters, less
    empty = torch.zeros_like(target)
    assert loss(nothing, empty).item() < 1e-3  # no target anywhere: only CE, and it is satisfied
