"""A Circle-of-Willis-like phantom in patient space (DICOM LPS, millimetres), and its rendering.

The arterial tree is a set of capsules (straight tubes with round ends), each tagged with one of
the 13 RSNA locations (class ids of ``labels.py``); aneurysms are saccular spheres attached to
the side of a capsule near its distal end, where real aneurysms sit (bifurcations). Radii follow
textbook values (ICA 2.0-2.5 mm, basilar 1.5, M1 1.3-1.6, A1 1.0-1.3, PCA 1.0, communicating
arteries 0.5-0.8), with per-subject variation and hypoplastic/absent communicating arteries.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from nnunet_aneurysm.labels import BY_NAME

L = {name: loc.class_id for name, loc in BY_NAME.items()}
ICA_INFRA = (L["Left Infraclinoid Internal Carotid Artery"], L["Right Infraclinoid Internal Carotid Artery"])
ICA_SUPRA = (L["Left Supraclinoid Internal Carotid Artery"], L["Right Supraclinoid Internal Carotid Artery"])
MCA = (L["Left Middle Cerebral Artery"], L["Right Middle Cerebral Artery"])
ACA = (L["Left Anterior Cerebral Artery"], L["Right Anterior Cerebral Artery"])
PCOM = (L["Left Posterior Communicating Artery"], L["Right Posterior Communicating Artery"])
ACOM, BASILAR_TIP, OTHER_POSTERIOR = L["Anterior Communicating Artery"], L["Basilar Tip"], \
    L["Other Posterior Circulation"]

# Where aneurysms occur (approximate clinical frequencies), by class id.
ANEURYSM_SITE_WEIGHTS = {
    ACOM: 0.20, MCA[0]: 0.10, MCA[1]: 0.10, ICA_SUPRA[0]: 0.08, ICA_SUPRA[1]: 0.08, PCOM[0]: 0.07,
    PCOM[1]: 0.07, BASILAR_TIP: 0.06, ICA_INFRA[0]: 0.05, ICA_INFRA[1]: 0.05, ACA[0]: 0.04, ACA[1]: 0.04,
    OTHER_POSTERIOR: 0.06,
}


@dataclass
class Segment:
    start: np.ndarray  # mm, LPS
    end: np.ndarray
    radius: float  # mm
    class_id: int


@dataclass
class Aneurysm:
    centre: np.ndarray  # mm, LPS
    radius: float  # mm (size = 2 * radius)
    class_id: int


@dataclass
class Phantom:
    segments: list[Segment]
    aneurysms: list[Aneurysm] = field(default_factory=list)


def _p(x, y, z):
    return np.array([x, y, z], dtype=float)


def vessel_tree(rng: np.random.Generator) -> list[Segment]:
    """One subject's arterial tree; x = patient left, y = posterior, z = superior (LPS)."""
    jitter = lambda p: p + rng.normal(0, 1.2, 3)  # noqa: E731
    scale = rng.uniform(0.9, 1.1)
    r = lambda base: base * rng.uniform(0.85, 1.15)  # noqa: E731
    segments: list[Segment] = []
    add = lambda a, b, radius, cid: segments.append(Segment(a * scale, b * scale, radius, cid))  # noqa: E731
    basilar_top = jitter(_p(0, 13, -3))
    basilar_mid = jitter(_p(0, 15, -12))
    add(jitter(_p(0, 17, -34)), basilar_mid, r(1.5), OTHER_POSTERIOR)  # vertebrobasilar trunk
    add(basilar_mid, basilar_top, r(1.5), BASILAR_TIP)
    acom_ends = []
    for side, s in ((0, 1.0), (1, -1.0)):  # left has x > 0 in LPS
        ica_base, siphon, term = jitter(_p(13 * s, 6, -34)), jitter(_p(12 * s, 5, -10)), jitter(_p(13 * s, 1, 0))
        add(ica_base, siphon, r(2.3), ICA_INFRA[side])
        add(siphon, term, r(2.1), ICA_SUPRA[side])
        mca_mid = jitter(_p(25 * s, 1, 3))
        add(term, mca_mid, r(1.45), MCA[side])
        add(mca_mid, jitter(_p(36 * s, 4, 10)), r(1.1), MCA[side])  # M2 after the bifurcation
        add(mca_mid, jitter(_p(35 * s, -3, -2)), r(1.0), MCA[side])
        a1_end = jitter(_p(3 * s, -13, 5))
        add(term, a1_end, r(1.15), ACA[side])
        add(a1_end, jitter(_p(3 * s, -20, 24)), r(1.0), ACA[side])  # A2
        acom_ends.append(a1_end)
        p1_end = jitter(_p(10 * s, 14, -1))
        add(basilar_top, p1_end, r(1.0), OTHER_POSTERIOR)  # P1
        add(p1_end, jitter(_p(22 * s, 28, 4)), r(1.0), OTHER_POSTERIOR)  # P2
        if rng.random() > 0.2:  # posterior communicating artery, absent in about a fifth
            add(siphon + (term - siphon) * 0.4, p1_end, r(0.65), PCOM[side])
    if rng.random() > 0.1:
        add(acom_ends[0], acom_ends[1], r(0.65), ACOM)
    return segments


def add_aneurysms(phantom: Phantom, count: int, rng: np.random.Generator) -> None:
    """Attach ``count`` saccular aneurysms (2-10 mm, most under 7) at plausible sites."""
    present = {s.class_id for s in phantom.segments}
    sites = [c for c in ANEURYSM_SITE_WEIGHTS if c in present]
    weights = np.array([ANEURYSM_SITE_WEIGHTS[c] for c in sites])
    for class_id in rng.choice(sites, size=count, replace=False, p=weights / weights.sum()):
        segment = [s for s in phantom.segments if s.class_id == class_id][0]
        axis = segment.end - segment.start
        point = segment.start + axis * rng.uniform(0.6, 0.95)
        normal = np.cross(axis, rng.normal(size=3))
        normal /= np.linalg.norm(normal)
        radius = (2 + 8 * rng.beta(1.5, 3.0)) / 2
        centre = point + normal * (segment.radius + 0.6 * radius)
        phantom.aneurysms.append(Aneurysm(centre, radius, int(class_id)))


def _capsule_distance(points: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ab = b - a
    t = np.clip(((points - a) @ ab) / (ab @ ab), 0.0, 1.0)
    closest = points - (a + t[:, None] * ab)
    return np.sqrt(np.einsum("ij,ij->i", closest, closest))


def _near(points: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Indices of the points inside the axis-aligned box [lo, hi] (cheap pruning before distances)."""
    inside = (points[:, 0] >= lo[0]) & (points[:, 0] <= hi[0])
    inside &= (points[:, 1] >= lo[1]) & (points[:, 1] <= hi[1])
    inside &= (points[:, 2] >= lo[2]) & (points[:, 2] <= hi[2])
    return np.flatnonzero(inside)


def render(phantom: Phantom, points: np.ndarray, voxel_mm: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample the phantom at ``points`` [N, 3] (mm).

    Returns vessel occupancy in [0, 1] with partial volume over about one voxel, the class id of
    the nearest vessel where occupied (0 elsewhere), and aneurysm occupancy.
    """
    points = np.asarray(points, np.float32)
    occupancy = np.zeros(len(points), np.float32)
    label = np.zeros(len(points), np.uint8)
    best = np.full(len(points), np.inf, np.float32)
    for s in phantom.segments:
        margin = s.radius + voxel_mm
        idx = _near(points, np.minimum(s.start, s.end) - margin, np.maximum(s.start, s.end) + margin)
        depth = s.radius - _capsule_distance(points[idx], s.start, s.end)  # > 0 inside
        occupancy[idx] = np.maximum(occupancy[idx], np.clip(depth / voxel_mm + 0.5, 0, 1))
        closer = (depth > 0) & (-depth < best[idx])
        label[idx[closer]], best[idx[closer]] = s.class_id, -depth[closer]
    sac = np.zeros(len(points), np.float32)
    for an in phantom.aneurysms:
        margin = an.radius + voxel_mm
        idx = _near(points, an.centre - margin, an.centre + margin)
        diff = points[idx] - an.centre
        depth = an.radius - np.sqrt(np.einsum("ij,ij->i", diff, diff))
        sac[idx] = np.maximum(sac[idx], np.clip(depth / voxel_mm + 0.5, 0, 1))
    return occupancy, label, sac
