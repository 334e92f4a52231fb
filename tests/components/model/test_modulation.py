import pytest
import torch

from components.config import AudioModulationConfig, SkeletonModulationConfig
from components.model.modulation import (
    AudioModulation,
    FrameAlignedCrossAttention,
    MotionProjection,
    SkeletonModulation,
    frame_window,
    group_frames,
    kept_slots,
    render_heatmaps,
    temporal_reshape,
)

T, T_LAT, D, DIM = 17, 5, 3, 32


def frame_ids(batch: int = 1, n_frames: int = T, tokens: int = D) -> torch.Tensor:
    """Features whose value is the frame index: [B, T, D, 1]."""
    return torch.arange(n_frames, dtype=torch.float32).view(1, -1, 1, 1).expand(batch, -1, tokens, 1).clone()


@pytest.mark.parametrize("variant, slots", [("reshape", 4), ("half", 2), ("downsample", 1)])
def test_reshape_token_counts(variant, slots):
    feats = torch.randn(2, T, D, 8)
    out = temporal_reshape(feats, rho=4, variant=variant)
    assert out.shape == (2, T_LAT, slots * D, 8)


def test_first_frame_is_repeated_like_the_causal_vae():
    groups = group_frames(frame_ids(), rho=4)[0, :, :, 0, 0]  # [T', rho] frame index per slot
    assert groups[0].tolist() == [0, 0, 0, 0]  # latent frame 0 comes from frame 0 alone
    for k in range(1, T_LAT):
        assert groups[k].tolist() == [4 * k - 3, 4 * k - 2, 4 * k - 1, 4 * k]


def test_variants_keep_the_documented_frames():
    assert kept_slots("half", 4) == [1, 3] and kept_slots("downsample", 4) == [3]
    ids = frame_ids(tokens=1)
    half = temporal_reshape(ids, 4, "half")[0, :, :, 0]
    down = temporal_reshape(ids, 4, "downsample")[0, :, :, 0]
    assert half.tolist() == [[0, 0], [2, 4], [6, 8], [10, 12], [14, 16]]  # every 2nd frame: audio/2
    assert down[:, 0].tolist() == [0, 4, 8, 12, 16]  # every 4th frame: audio/4
    # reshape keeps every frame in order, token-major inside each frame (eq. 6 on [T, D, d])
    full = temporal_reshape(frame_ids(tokens=2), 4, "reshape")[0, 2, :, 0]
    assert full.tolist() == [5, 5, 6, 6, 7, 7, 8, 8]


def test_clip_length_must_match_the_causal_vae():
    with pytest.raises(ValueError, match="4k\\+1 frames"):
        temporal_reshape(torch.randn(1, 16, D, 8), 4, "reshape")


def test_frame_window_clamps_at_the_edges():
    out = frame_window(frame_ids(tokens=1), window=1)
    assert out.shape == (1, T, 3, 1)
    assert out[0, 0, :, 0].tolist() == [0, 0, 1] and out[0, 8, :, 0].tolist() == [7, 8, 9]
    assert out[0, -1, :, 0].tolist() == [15, 16, 16]


@pytest.mark.parametrize("variant", ["reshape", "half", "downsample"])
def test_projection_is_frame_local(variant):
    proj = MotionProjection(8, D, DIM, rho=4, temporal=variant, slot_embedding=True, null="learned")
    feats = torch.randn(1, T, D, 8)
    base = proj(feats)
    for frame, expect_latent in [(0, 0), (6, 2), (8, 2), (16, 4)]:
        bumped = feats.clone()
        bumped[:, frame] += 1.0
        changed = (proj(bumped) - base).abs().amax(dim=(0, 2, 3)) > 0  # per latent frame
        kept = frame in [4 * k - 3 + s for k in range(1, T_LAT) for s in kept_slots(variant, 4)] or frame == 0
        expected = [kept and k == expect_latent for k in range(T_LAT)]
        assert changed.tolist() == expected, (variant, frame)


def test_slot_embedding_orders_the_frames_of_a_latent_frame():
    # Swapping two frames inside a latent frame must change the tokens' attention output only if slots are
    # distinguishable; with the slot embedding, the token set itself changes.
    feats = torch.randn(1, T, 1, 8)
    swapped = feats.clone()
    swapped[:, [5, 6]] = feats[:, [6, 5]]
    with_slots = MotionProjection(8, 1, DIM, 4, "reshape", slot_embedding=True, null="zero")
    a, b = with_slots(feats)[0, 2], with_slots(swapped)[0, 2]
    assert not torch.allclose(a.sort(0).values, b.sort(0).values)  # not the same set of tokens
    no_slots = MotionProjection(8, 1, DIM, 4, "reshape", slot_embedding=False, null="zero")
    a, b = no_slots(feats)[0, 2], no_slots(swapped)[0, 2]
    assert torch.allclose(a.sort(0).values, b.sort(0).values)  # the literal eq. 7 sees an unordered set


@pytest.mark.parametrize("null", ["learned", "zero"])
def test_condition_dropout_replaces_only_dropped_rows(null):
    proj = MotionProjection(8, D, DIM, 4, "reshape", slot_embedding=True, null=null)
    feats = torch.randn(3, T, D, 8)
    drop = torch.tensor([True, False, True])
    out, clean = proj(feats, drop), proj(feats)
    assert torch.equal(out[1], clean[1])
    null_tokens = proj.null_tokens(1, T_LAT, out)[0]
    assert torch.equal(out[0], null_tokens) and torch.equal(out[2], null_tokens)
    if null == "zero":
        assert not out[0].any()


def test_audio_modulation_with_window():
    cfg = AudioModulationConfig(in_dim=8, tokens_per_frame=2, window=1)
    out = AudioModulation(cfg, DIM, rho=4)(torch.randn(2, T, 2, 8))
    assert out.shape == (2, T_LAT, 4 * 3 * 2, DIM)
    with pytest.raises(ValueError, match="motion features must be"):
        AudioModulation(cfg, DIM, rho=4)(torch.randn(2, T, 3, 8))


def test_heatmaps_peak_at_the_keypoint_and_skip_missing_joints():
    pose = torch.tensor([[0.25, 0.75, 1.0], [float("nan"), 0.5, 1.0], [0.5, 0.5, 0.0]])
    maps = render_heatmaps(pose, 16, 16, sigma=1.0)
    assert maps.shape == (3, 16, 16)
    y, x = divmod(int(maps[0].argmax()), 16)
    assert (y, x) in {(11, 3), (11, 4), (12, 3), (12, 4)}  # (0.75*16, 0.25*16) sits between pixel centres
    assert maps[1].abs().sum() == 0 and maps[2].abs().sum() == 0  # undetected / zero confidence


def test_skeleton_modulation_shapes_and_spatial_sensitivity():
    cfg = SkeletonModulationConfig(enabled=True, n_joints=5, grid=(4, 4), n_down=1, channels=8, feat_dim=8)
    torch.manual_seed(0)
    mod = SkeletonModulation(cfg, DIM, rho=4)
    pose = torch.rand(2, T, 5, 3)
    out = mod(pose)
    assert out.shape == (2, T_LAT, 4 * 16, DIM)
    moved = pose.clone()
    moved[:, 9, 0, :2] = 1 - moved[:, 9, 0, :2]  # move one joint in frame 9 (latent frame 3)
    changed = (mod(moved) - out).abs().amax(dim=(0, 2, 3)) > 0
    assert changed.tolist() == [False, False, False, True, False]
    with pytest.raises(ValueError, match="pose must be"):
        mod(torch.rand(2, T, 4, 3))


def test_cross_attention_is_zero_at_init_and_frame_aligned():
    torch.manual_seed(0)
    attn = FrameAlignedCrossAttention(DIM, heads=2)
    tokens_per_frame = 6
    video = torch.randn(2, T_LAT * tokens_per_frame, DIM)
    motion = torch.randn(2, T_LAT, 8, DIM)
    assert not attn(video, motion).any()  # zero output projection

    torch.nn.init.normal_(attn.attn.to_out[0].weight)
    base = attn(video, motion)
    bumped = motion.clone()
    bumped[:, 2] += 1.0
    delta = (attn(video, bumped) - base).abs().view(2, T_LAT, tokens_per_frame, DIM).amax(dim=(0, 2, 3))
    assert (delta > 0).tolist() == [False, False, True, False, False]
    with pytest.raises(ValueError, match="cannot align"):
        attn(torch.randn(2, 7, DIM), motion)
