"""Masked-volume pretraining (SparK for WaveFormer) and the pretrained checkpoint's way into stage 2, checked on
what would be hollow: a mask that varies, hidden values that leak, a loss on visible voxels, a loader that
skips keys."""

from __future__ import annotations

import pytest
import torch
from nnunetv2.run.load_pretrained_weights import load_pretrained_weights

from nnunet_aneurysm.networks.masking import (
    MaskedWaveFormer,
    _visible_group_norm,
    block_visibility,
    masked_reconstruction_loss,
    sparse_encoder,
    visibility_at,
)
from nnunet_aneurysm.networks.waveformer import WaveFormer, cpu_config

SHAPE = (32, 32, 48)
METADATA = torch.linspace(-1, 1, 14).reshape(2, 7)
KWARGS = dict(**cpu_config(), akorn={"grid": 2}, pinn={}, classification_outputs=14, metadata_dim=7,
              artery_channel=2)


def _inputs(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, *SHAPE, generator=g)
    x[:, 2] = torch.randint(0, 14, (2, *SHAPE), generator=g).float()
    return x


def test_the_mask_is_a_seeded_share_of_whole_blocks():
    a = block_visibility(2, SHAPE, 16, 0.6, torch.Generator().manual_seed(3))
    b = block_visibility(2, SHAPE, 16, 0.6, torch.Generator().manual_seed(3))
    c = block_visibility(2, SHAPE, 16, 0.6, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c) and a.shape == (2, 1, *SHAPE)
    blocks = a.reshape(2, 1, 2, 16, 2, 16, 3, 16)
    assert torch.equal(blocks.amin((3, 5, 7)), blocks.amax((3, 5, 7)))  # every 16^3 block wholly one or the other
    assert (1 - a).mean().item() == pytest.approx(round(0.6 * 12) / 12)


def test_hidden_voxels_neither_reach_the_output_nor_receive_a_gradient():
    """Changing the image at hidden voxels changes nothing the network outputs; their gradient is exactly 0."""
    torch.manual_seed(0)
    network = MaskedWaveFormer(3, 14, False, **KWARGS).eval()
    visible = block_visibility(2, SHAPE, 16, 0.6, torch.Generator().manual_seed(0))
    x = _inputs().requires_grad_(True)
    network(x, metadata=METADATA, visible=visible).sum().backward()
    hidden = visible.expand_as(x) == 0
    assert x.grad[hidden].abs().max() == 0 and x.grad[~hidden].abs().max() > 0
    other = x.detach() + (1 - visible) * 100.0 * torch.randn_like(x)
    with torch.no_grad():
        torch.testing.assert_close(network(other, metadata=METADATA, visible=visible),
                                   network(x.detach(), metadata=METADATA, visible=visible))


def test_the_encoder_is_sparse_after_every_convolution_and_its_norms_see_visible_voxels_only():
    torch.manual_seed(0)
    network = MaskedWaveFormer(3, 14, False, **KWARGS).eval()
    visible = block_visibility(2, SHAPE, 16, 0.5, torch.Generator().manual_seed(1))
    convolutions = [network.stem[0], network.downs[0].mix[0], network.stages[0][0].mlp.dwconv]
    seen, inputs = [], []
    with torch.no_grad(), sparse_encoder(network.encoder_modules(), visible):
        hooks = [c.register_forward_hook(lambda _m, _i, out: seen.append(out)) for c in convolutions]
        hooks += [c.register_forward_pre_hook(lambda _m, args: inputs.append(args[0])) for c in convolutions]
        network.encode(_inputs(), METADATA)
    for hook in hooks:
        hook.remove()
    assert len(seen) == len(inputs) == 3  # the stem's conv, a down-step's mix, a Mix-FFN's depthwise conv
    for out in [*seen, *inputs]:  # each sees zeros at hidden positions and writes zeros there
        hidden = visibility_at(visible, out.shape[2:]).expand_as(out) == 0
        assert hidden.any() and out[hidden].abs().max() == 0 and out[~hidden].abs().max() > 0
    norm = torch.nn.GroupNorm(2, 8)
    x = torch.randn(1, 8, 4, 4, 4)
    mask = torch.zeros(1, 1, 4, 4, 4)
    mask[..., :2] = 1
    ours = _visible_group_norm(norm, x, mask)
    reference = norm(x[..., :2].contiguous())  # GroupNorm of the visible half alone
    torch.testing.assert_close(ours[..., :2], reference, atol=1e-5, rtol=1e-5)
    assert ours[..., 2:].abs().max() == 0


def test_the_encoders_visible_outputs_ignore_the_hidden_image():
    """Given the WHOLE image (nothing zeroed beforehand), the sparse encoder's visible positions are the same at
    every level whatever the hidden voxels hold: the masking inside the encoder alone hides them."""
    torch.manual_seed(0)
    network = MaskedWaveFormer(3, 14, False, **KWARGS).eval()
    visible = block_visibility(2, SHAPE, 16, 0.5, torch.Generator().manual_seed(5))
    x = _inputs()
    other = x + (1 - visible) * 100.0 * torch.randn_like(x)

    def visible_skips(image):
        with torch.no_grad(), sparse_encoder(network.encoder_modules(), visible):
            skips, _, _ = network.encode(image, METADATA)
        return [s * visibility_at(visible, s.shape[2:]) for s in skips]

    for a, b in zip(visible_skips(x), visible_skips(other)):
        torch.testing.assert_close(a, b)
        assert a.abs().max() > 0


def test_the_loss_is_taken_on_hidden_voxels_only():
    visible = block_visibility(1, SHAPE, 16, 0.6, torch.Generator().manual_seed(2))
    image = torch.randn(1, 1, *SHAPE)
    reconstruction = torch.randn(1, 1, *SHAPE, requires_grad=True)
    loss = masked_reconstruction_loss(reconstruction, image, visible)
    loss.backward()
    assert reconstruction.grad[visible == 1].abs().max() == 0 and reconstruction.grad[visible == 0].abs().max() > 0
    moved = reconstruction.detach() + visible * 50.0
    assert masked_reconstruction_loss(moved, image, visible) == pytest.approx(loss.item())


def test_a_pretrained_checkpoint_loads_every_key_through_nnunets_own_loader(tmp_path):
    """Every key of stage 2's network is in the pretrained checkpoint with its shape; nnU-Net's loader copies all
    of them (a loader that skipped some would leave those at their fresh values: caught key by key)."""
    torch.manual_seed(0)
    pretrained = MaskedWaveFormer(3, 14, True, **KWARGS)
    with torch.no_grad():
        for p in pretrained.parameters():
            p.add_(0.01 * torch.randn_like(p))
    torch.save({"network_weights": pretrained.state_dict()}, tmp_path / "checkpoint_final.pth")
    torch.manual_seed(1)
    stage2 = WaveFormer(3, 14, True, **KWARGS).eval()
    x = _inputs()
    with torch.no_grad():
        before = stage2(x, METADATA)[0]
    load_pretrained_weights(stage2, str(tmp_path / "checkpoint_final.pth"))
    loaded = pretrained.state_dict()
    for key, value in stage2.state_dict().items():
        assert torch.equal(value, loaded[key]), key
    with torch.no_grad():
        assert not torch.allclose(stage2(x, METADATA)[0], before)
    assert set(loaded) - set(stage2.state_dict()) == {k for k in loaded if k.startswith("masked_pretraining.")}
