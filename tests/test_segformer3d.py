import pytest
import torch

from nnunet_aneurysm.metadata import METADATA_DIM, encode_metadata, polarity_gain_weights
from nnunet_aneurysm.networks.segformer3d import SegFormer3D


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_paper_configuration_parameter_count():
    # Perera et al. 2024: 4.51 M parameters with 4 input channels (BraTS) and 3 classes.
    assert abs(n_params(SegFormer3D(4, 3)) - 4.51e6) / 4.51e6 < 0.01


@pytest.mark.parametrize("shape", [(32, 64, 96), (64, 32, 32)])
def test_non_cubic_shapes_and_batch_two(shape):
    model = SegFormer3D(1, 5).train()
    out = model(torch.randn(2, 1, *shape))
    assert out.shape == (2, 5, *shape)


def test_deep_supervision_order_and_gradients():
    model = SegFormer3D(2, 4, deep_supervision=True, embed_dims=(16, 32, 48, 64), num_heads=(1, 2, 3, 4),
                        decoder_dim=32, refine_head=True, metadata_dim=METADATA_DIM, input_gain=polarity_gain_weights())
    x = torch.randn(2, 2, 64, 32, 64)
    outs = model(x, torch.rand(2, METADATA_DIM))
    assert len(outs) == len(model.deep_supervision_scales) == 4
    for out, scale in zip(outs, model.deep_supervision_scales):
        assert out.shape[2:] == tuple(int(s * scale) for s in x.shape[2:])
    sum(o.mean() for o in outs).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing
    model.decoder.deep_supervision = False
    assert model(x).shape == (2, 4, 64, 32, 64)


def test_rejects_patch_not_divisible_by_stride():
    with pytest.raises(ValueError, match="divisible by 32"):
        SegFormer3D(1, 2)(torch.randn(1, 1, 48, 64, 64))


def _modality(name: str, batch: int = 2) -> torch.Tensor:
    return torch.from_numpy(encode_metadata(None, None, name)).expand(batch, -1)


def _small(**kwargs) -> SegFormer3D:
    torch.manual_seed(0)
    return SegFormer3D(1, 3, embed_dims=(16, 32, 48, 64), num_heads=(1, 2, 3, 4), decoder_dim=32,
                       refine_head=True, **kwargs).eval()


@pytest.mark.parametrize("path", ["encoder stages", "full-resolution stem"])
def test_metadata_by_film_change_the_vessel_logits_at_initialisation(path):
    # T2 vessels are dark, the other modalities' bright: the network must be able to tell them apart,
    # through its encoder stages and through the full-resolution stem that sees thin vessels
    model = _small(metadata_dim=METADATA_DIM)
    if path == "encoder stages":
        model.refinement.film = None
    else:
        model.films = None
    x = torch.randn(2, 1, 32, 64, 32)
    assert (model(x, _modality("CTA")) - model(x, _modality("MRI T2"))).abs().max() > 1e-4


def test_a_predictor_that_passes_the_image_alone_gets_the_conditioned_vector():
    model = _small(metadata_dim=METADATA_DIM)
    x = torch.randn(1, 1, 32, 32, 32)
    t2 = _modality("MRI T2", batch=1)
    unknown = model(x)
    assert torch.equal(unknown, model(x, torch.zeros(1, METADATA_DIM)))  # nothing set: the unknown vector
    with model.conditioned(t2[0]):
        assert torch.equal(model(x), model(x, t2))
        assert not torch.equal(model(x), unknown)
    assert torch.equal(model(x), unknown)  # restored after the block
    with pytest.raises(ValueError, match="metadata"):
        model(x, torch.zeros(2, METADATA_DIM))


def test_the_input_gain_starts_at_each_modality_s_vessel_polarity():
    # T2 arteries are dark flow voids: stage 1 starts by seeing a T2 image sign-flipped, so that its vessels
    # are bright like those of the modalities it learns beside (a learnt gain, from that start)
    model = _small(metadata_dim=METADATA_DIM, input_gain=polarity_gain_weights())
    model.films, model.refinement.film = None, None  # the gain alone
    x = torch.randn(2, 1, 32, 32, 32)
    assert torch.allclose(model(x, _modality("MRI T2")), model(-x, _modality("CTA")), atol=1e-5)
    assert torch.equal(model(x, _modality("MRA")), model(x, torch.zeros(2, METADATA_DIM)))  # unknown: as is
    assert not torch.allclose(model(x, _modality("MRI T2")), model(x, _modality("CTA")), atol=1e-3)
    with pytest.raises(ValueError, match="input_gain"):
        SegFormer3D(1, 3, metadata_dim=METADATA_DIM, input_gain=[0.0])
