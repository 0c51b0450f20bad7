"""WaveFormer and its parts: the Haar transform, attention at initialisation, AKOrN oscillators,
FiLM inside the backbone, and the location-aware series heads."""

import math

import pytest
import torch

from nnunet_aneurysm.metadata import METADATA_DIM, encode_metadata
from nnunet_aneurysm.networks.akorn import AKOrNLayer, group_normalise, order_parameter, upsample_trilinear
from nnunet_aneurysm.networks.blocks import EfficientSelfAttention
from nnunet_aneurysm.networks.film import FiLM
from nnunet_aneurysm.networks.haar import dwt3d, idwt3d
from nnunet_aneurysm.networks.location_heads import LocationHeads, dilate, masked_pool, territories
from nnunet_aneurysm.networks.waveformer import WaveFormer, cpu_config, dwt_levels

SMALL = dict(embed_dims=(16, 32, 32), depths=(1, 1, 1), num_heads=(1, 2, 2), stem_channels=8, max_tokens=64,
             classification_outputs=14, metadata_dim=METADATA_DIM)


@pytest.mark.parametrize("shape", [(8, 6, 4), (7, 5, 9)])
def test_haar_round_trip_is_exact_and_orthonormal(shape):
    x = torch.randn(2, 3, *shape, dtype=torch.float64)
    bands, original = dwt3d(x)
    assert bands.shape == (2, 8, 3, *[(s + 1) // 2 for s in shape])
    torch.testing.assert_close(idwt3d(bands, original), x, rtol=0, atol=1e-12)
    if all(s % 2 == 0 for s in shape):  # orthonormal: energy is kept
        torch.testing.assert_close(bands.pow(2).sum(), x.pow(2).sum())


def test_haar_low_band_is_the_scaled_block_mean():
    x = torch.randn(1, 1, 4, 4, 4, dtype=torch.float64)
    bands, _ = dwt3d(x)
    block_mean = torch.nn.functional.avg_pool3d(x, 2)
    torch.testing.assert_close(bands[:, 0], block_mean * 2 ** 1.5)


def test_dwt_levels():
    assert dwt_levels((8, 8, 8), 512) == 0
    assert dwt_levels((32, 32, 16), 512) == 2


def _with_arteries(batch, shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, *shape, generator=g)
    x[:, 1] = torch.rand(batch, *shape, generator=g)
    x[:, 2] = torch.randint(0, 14, (batch, *shape), generator=g).float()
    return x


@pytest.mark.parametrize("akorn", [None, {"n": 4, "steps": 2}])
def test_non_cubic_shapes_deep_supervision_and_gradients(akorn):
    model = WaveFormer(3, 5, deep_supervision=True, akorn=akorn, pinn={"hidden": 8}, artery_channel=2, **SMALL)
    x = _with_arteries(2, (32, 24, 40))
    seg, aux = model(x, metadata=torch.randn(2, METADATA_DIM), return_aux=True)
    assert [tuple(s.shape[2:]) for s in seg] == [(32, 24, 40), (16, 12, 20), (8, 6, 10)]
    assert len(seg) == len(model.deep_supervision_scales)
    assert aux["class_logits"].shape == (2, 14)
    uvwp = model.pinn_head.field(torch.rand(2, 16, 3, dtype=torch.float64), aux["pinn_code"])
    loss = sum(s.mean() for s in seg) + aux["class_logits"].mean() + uvwp.mean()
    if akorn:
        assert aux["order_parameter"].shape == (2,)
        loss = loss + aux["order_parameter"].mean()
    else:
        assert aux["order_parameter"] is None
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing
    model.decoder.deep_supervision = False
    assert model(x).shape == (2, 5, 32, 24, 40)


def _attention_at_initialisation(model, x):
    """(mean maximum weight, mean entropy, uniform entropy) of every attention layer for input x."""
    records = []

    def hook(module, args):
        tokens = args[0]
        b, n, c = tokens.shape
        h = module.num_heads
        q = module.query(tokens).reshape(b, n, h, c // h).transpose(1, 2)
        k = module.key_value(tokens).reshape(b, n, 2, h, c // h).permute(2, 0, 3, 1, 4)[0]
        w = (q @ k.transpose(-1, -2) / math.sqrt(c // h)).softmax(-1)
        records.append((w.amax(-1).mean().item(), -(w * w.clamp_min(1e-12).log()).sum(-1).mean().item(),
                        math.log(n)))

    handles = [m.register_forward_pre_hook(hook) for m in model.modules() if isinstance(m, EfficientSelfAttention)]
    with torch.no_grad():
        model(x)
    for handle in handles:
        handle.remove()
    return records


def test_attention_is_not_saturated_at_initialisation_on_a_128_cube():
    """The low band of three Haar levels is 2.8^3 times a smooth input's block mean; attended unscaled, the
    first stage put 0.91 of its weight on one token (entropy 0.24 of 6.24)."""
    torch.manual_seed(0)
    model = WaveFormer(1, 14, **cpu_config(), classification_outputs=14, metadata_dim=METADATA_DIM)
    smooth = torch.nn.functional.interpolate(torch.randn(1, 1, 8, 8, 8), size=(128, 128, 128), mode="trilinear")
    records = _attention_at_initialisation(model, 3 * smooth)
    assert len(records) == 6
    for max_weight, entropy, uniform in records:
        assert max_weight < 0.1 and entropy > 0.9 * uniform


def test_order_parameter_is_synchrony_per_oscillator_group_over_space():
    groups = torch.randn(1, 16, 1, 1, 1)  # 4 groups of n = 4, different from each other
    identical = groups.expand(3, 16, 4, 4, 4)  # ... but the same in all 64 regions
    torch.testing.assert_close(order_parameter(identical, 4), torch.ones(3, 4))
    independent = order_parameter(torch.randn(64, 16, 4, 4, 4), 4)  # M = 64 regions
    assert 0.5 / math.sqrt(64) < independent.mean().item() < 2 / math.sqrt(64)
    opposite = torch.cat([torch.ones(1, 4, 2, 1, 1), -torch.ones(1, 4, 2, 1, 1)], dim=2)
    assert order_parameter(opposite, 4).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("size", [(32, 32, 32), (6, 5, 7), (4, 4, 4)])
def test_separable_upsampling_equals_torch_trilinear(size):
    x = torch.randn(2, 8, 4, 3, 5, dtype=torch.float64)
    expected = torch.nn.functional.interpolate(x, size=size, mode="trilinear", align_corners=False)
    torch.testing.assert_close(upsample_trilinear(x, size), expected, rtol=0, atol=1e-12)


def test_group_normalise_gives_unit_oscillators_in_the_same_direction():
    x = torch.randn(2, 8, 4, 3, 5, dtype=torch.float64)
    unit = group_normalise(x, 4).unflatten(1, (-1, 4))
    torch.testing.assert_close(unit.norm(dim=2), torch.ones(2, 2, 4, 3, 5, dtype=torch.float64))
    torch.testing.assert_close(unit * x.unflatten(1, (-1, 4)).norm(dim=2, keepdim=True), x.unflatten(1, (-1, 4)))


def test_oscillators_move_at_initialisation():
    """Started from the stimulus (a fixed point of its own drive) they kept cos(x_0, x_T) = 0.96."""
    torch.manual_seed(0)
    layer = AKOrNLayer(64, n=4, steps=8)
    layer(torch.randn(2, 64, 16, 16, 16))
    start, end = (t.unflatten(1, (-1, 4)) for t in layer.last_trajectory)
    assert (start * end).sum(2).mean().item() < 0.5


def test_the_stimulus_is_how_a_region_differs_from_the_rest_of_its_series():
    """Per channel over the regions: zero mean, so no series-independent constant can drive the oscillators
    (with a learnt shift the trained stimulus was one; every series then ended in the same state)."""
    torch.manual_seed(0)
    layer = AKOrNLayer(16, n=4, steps=8)
    features = torch.randn(2, 16, 8, 8, 8)
    pooled = torch.cat([torch.nn.functional.adaptive_avg_pool3d(features, 4),
                        torch.nn.functional.adaptive_max_pool3d(features, 4)], 1)
    c = layer.stimulus(pooled)
    assert c.flatten(2).mean(2).abs().max() < 1e-5 and layer.stimulus(pooled + 3.0).sub(c).abs().max() < 1e-4
    other = features.clone()
    other[:, :, :2, :2, :2] += 3.0  # one region differs: its oscillators start and end elsewhere
    layer(features)
    first = layer.last_trajectory[1]
    layer(other)
    assert (layer.last_trajectory[1] - first)[:, :, 0, 0, 0].abs().max() > 0.1


def _euler_as_written(layer: AKOrNLayer, features: torch.Tensor) -> torch.Tensor:
    """The paper's update step by step: x <- normalise(x + h (Omega x + Proj_x(c + J x)))."""
    n = layer.n
    pooled = torch.cat([torch.nn.functional.adaptive_avg_pool3d(features, layer.grid),
                        torch.nn.functional.adaptive_max_pool3d(features, layer.grid)], 1)
    c = layer.stimulus(pooled).unflatten(1, (-1, n))
    omega = layer.omega - layer.omega.transpose(1, 2)
    x = layer.start(pooled)
    x = (x.unflatten(1, (-1, n)) / x.unflatten(1, (-1, n)).norm(dim=2, keepdim=True)).flatten(1, 2)
    for _ in range(layer.steps):
        coupled = torch.nn.functional.conv3d(layer.coupling_space(x), layer.coupling_mix.weight)
        xg, drive = x.unflatten(1, (-1, n)), c + coupled.unflatten(1, (-1, n))
        projected = drive - (drive * xg).sum(2, keepdim=True) * xg
        rotation = torch.einsum("gij,bgjdhw->bgidhw", omega, xg)
        x = xg + layer.step_size * (rotation + projected)
        x = (x / x.norm(dim=2, keepdim=True)).flatten(1, 2)
    return x


@pytest.mark.parametrize("step_size", [1.0, 0.3])
def test_fused_euler_loop_is_the_papers_update(step_size):
    torch.manual_seed(0)
    layer = AKOrNLayer(16, n=4, steps=5, step_size=step_size).double()
    with torch.no_grad():
        layer.omega.normal_()  # a rotation that matters
    features = torch.randn(2, 16, 8, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(layer.oscillate(features), _euler_as_written(layer, features), rtol=0, atol=1e-12)


def test_akorn_parameter_count_and_coupling_cost():
    """dim 256, n 4: stimulus 131 k (mean and max pools, no bias) + start 131.3 k + coupling 27.6 k (grouped
    3x3x3) + 65.5 k (pointwise) + omega 1 k + readout 263.4 k = 620 k parameters; a dense 3x3x3 coupling alone
    would be 1.77 M."""
    layer = AKOrNLayer(256, n=4)
    assert sum(p.numel() for p in layer.parameters()) == 620_032
    assert sum(p.numel() for p in layer.coupling_space.parameters()) == 256 * 4 * 27
    assert sum(p.numel() for p in layer.coupling_mix.parameters()) == 256 * 256


def test_akorn_rejects_odd_oscillators():
    with pytest.raises(ValueError):
        AKOrNLayer(9, n=3)


def test_metadata_changes_segmentation_and_series_outputs_at_initialisation():
    """FiLM sits at the bottleneck, before the decoder and the heads; once applied only to the pooled
    vector before a LayerNorm, it changed the logits by 1e-6 and the segmentation not at all."""
    torch.manual_seed(0)
    model = WaveFormer(3, 14, artery_channel=2, akorn={"steps": 2}, **SMALL).eval()
    x = _with_arteries(1, (32, 32, 32))
    young_ct = torch.from_numpy(encode_metadata(25, "Female", "CTA"))[None]
    old_mr = torch.from_numpy(encode_metadata(85, "Male", "MRI T2"))[None]
    with torch.no_grad():
        seg_a, aux_a = model(x, young_ct, return_aux=True)
        seg_b, aux_b = model(x, old_mr, return_aux=True)
    assert (seg_a - seg_b).abs().max() > 1e-3 * seg_a.abs().max()
    assert (aux_a["class_logits"] - aux_b["class_logits"]).abs().max() > 1e-4


def test_film_starts_near_identity_and_metadata_encoding():
    film = FiLM(6, METADATA_DIM)
    x = torch.randn(2, 6, 3, 3, 3)
    torch.testing.assert_close(film(x, torch.randn(2, METADATA_DIM)), x, rtol=0, atol=0.5)
    vec = encode_metadata(62, "Female", "MRA")
    assert vec.tolist() == pytest.approx([0.62, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0])
    assert not encode_metadata(None, None, "PET").any()


def test_territories_are_dilated_location_masks():
    labels = torch.zeros(1, 9, 9, 9)
    labels[0, 4, 4, 4] = 5
    masks = territories(labels, 13, margin=1)
    assert masks.shape == (1, 13, 9, 9, 9) and masks[0, 4].sum() == 27 and masks[0, [0, 1, 2, 3, 5]].sum() == 0
    assert dilate(masks, 0) is masks


def test_location_logit_sees_only_its_own_territory():
    torch.manual_seed(0)
    heads = LocationHeads(feature_dim=4, num_locations=13).eval()
    labels = torch.zeros(1, 12, 12, 12)
    labels[0, 2:4, 2:4, 2:4] = 5  # territory of location 5 (submission column 4)
    labels[0, 8:10, 8:10, 8:10] = 9  # territory of location 9 (column 8)
    masks = territories(labels, 13, margin=0)
    features = torch.randn(1, 4, 12, 12, 12)
    base = heads(features, masks)
    inside_5 = features.clone()
    inside_5[..., 2:4, 2:4, 2:4] += 3.0
    outside_all = features.clone()
    outside_all[..., 5:7, 5:7, 5:7] += 3.0  # in no territory
    changed, unchanged = heads(inside_5, masks), heads(outside_all, masks)
    assert (changed[0, 4] - base[0, 4]).abs() > 1e-3  # location 5 moved
    torch.testing.assert_close(changed[0, [c for c in range(13) if c != 4]], base[0, [c for c in range(13) if c != 4]])
    torch.testing.assert_close(unchanged, base)  # nothing outside every territory reaches any logit
    assert (changed[0, 13] - base[0, 13]).abs() > 1e-4  # 'present' pools over all territories


def test_masked_pool_is_max_and_mean_and_zero_for_an_empty_mask():
    features = torch.arange(8.0).view(1, 1, 2, 2, 2)
    masks = torch.zeros(1, 2, 2, 2, 2)
    masks[0, 0, 0] = 1  # the first four voxels
    pooled = masked_pool(features, masks)
    assert pooled[0, 0].tolist() == [3.0, 1.5] and pooled[0, 1].tolist() == [0.0, 0.0]
