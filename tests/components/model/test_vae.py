import pytest
import torch

from components.model.vae import (
    VaeConfig,
    build_vae,
    channels_last_on_cpu,
    decode_latents,
    encode_video,
    latent_frames,
    latent_stats,
    load_vae,
    set_latent_stats,
    spatial_ratio,
    temporal_ratio,
    to_uint8_frames,
    to_vae_input,
)


@pytest.fixture(scope="module")
def vae():
    return build_vae(VaeConfig()).eval()


def clip(n_frames: int = 17, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (1, n_frames, size, size, 3), generator=g, dtype=torch.uint8)


def test_compression_17_frames_to_5_latent_frames_at_4x(vae):
    with torch.no_grad():
        latents = encode_video(vae, clip(17, 32))
        assert latents.shape == (1, 16, 5, 8, 8)  # the toy VAE: dim_mult (1, 2, 2) = 4x in space
        video = decode_latents(vae, latents)
    assert video.shape == (1, 3, 17, 32, 32) and video.min() >= -1 and video.max() <= 1
    frames = to_uint8_frames(video)
    assert frames.shape == (1, 17, 32, 32, 3) and frames.dtype == torch.uint8
    assert latent_frames(17) == 5 and latent_frames(1) == 1


@pytest.mark.parametrize("dim_mult, temporal, ratio", [((1, 2, 2), (True, True), 4), ((1, 2, 2, 2), (False, True, True), 8)])
def test_the_vae_says_its_real_compression_also_after_a_reload(tmp_path, dim_mult, temporal, ratio):
    # diffusers' own default is 8x whatever the blocks do: build_vae must state the real ratios, and the saved config
    # must carry them, since every consumer (latents, bundle checks, inference) reads them from the loaded VAE.
    vae = build_vae(VaeConfig(base_dim=8, z_dim=4, dim_mult=dim_mult, temperal_downsample=temporal)).eval()
    vae.save_pretrained(tmp_path)
    for model in (vae, load_vae(tmp_path)):
        assert spatial_ratio(model) == ratio and temporal_ratio(model) == 4
        with torch.no_grad():
            assert encode_video(model, clip(5, 32)).shape == (1, 4, 2, 32 // ratio, 32 // ratio)


def test_a_temporal_flag_per_downsampling_is_required():
    with pytest.raises(ValueError, match="temperal_downsample needs len\\(dim_mult\\) - 1 = 3 entries"):
        VaeConfig(dim_mult=(1, 2, 2, 2), temperal_downsample=(True, True))


def test_layouts_and_dtypes_agree(vae):
    frames = clip(5)
    x = to_vae_input(frames)
    assert x.shape == (1, 3, 5, 32, 32) and x.min() >= -1 and x.max() <= 1
    assert torch.equal(to_vae_input(frames.permute(0, 4, 1, 2, 3)), x)  # [B,3,T,H,W] uint8
    assert torch.equal(to_vae_input(x), x)  # float in [-1, 1] passes through
    assert torch.equal(to_uint8_frames(x), frames)  # exact round trip of the pixel mapping
    with torch.no_grad():
        assert torch.equal(encode_video(vae, frames), encode_video(vae, x))


def test_bad_inputs_are_named(vae):
    with pytest.raises(ValueError, match="4k\\+1 frames, got 16"):
        encode_video(vae, clip(16))
    with pytest.raises(ValueError, match="not a multiple"):
        encode_video(vae, clip(17, 34))
    with pytest.raises(ValueError, match="5-D"):
        encode_video(vae, torch.zeros(17, 32, 32, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match="latents must be"):
        decode_latents(vae, torch.zeros(1, 8, 5, 4, 4))


def test_latent_statistics_normalise_and_persist(tmp_path):
    vae = build_vae(VaeConfig()).eval()
    frames = clip(5, 16)
    with torch.no_grad():
        raw = encode_video(vae, frames)  # a fresh toy VAE has identity statistics
        decoded_raw = decode_latents(vae, raw)
        mean, std = latent_stats(raw)
        set_latent_stats(vae, mean, std)
        normalised = encode_video(vae, frames)
        expected = (raw - torch.tensor(mean).view(1, -1, 1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1, 1)
        torch.testing.assert_close(normalised, expected)
        torch.testing.assert_close(normalised.transpose(0, 1).flatten(1).mean(1), torch.zeros(16), atol=1e-5, rtol=0)
        torch.testing.assert_close(decode_latents(vae, normalised), decoded_raw, atol=1e-5, rtol=0)

        vae.save_pretrained(tmp_path / "wan" / "vae")
        loaded = build_vae(VaeConfig(pretrained_path=str(tmp_path / "wan")))
        assert list(loaded.config.latents_mean) == pytest.approx(mean)
        assert torch.equal(encode_video(loaded.eval(), frames), normalised)
    with pytest.raises(ValueError, match="positive stds"):
        set_latent_stats(vae, mean, [0.0] * 16)


def test_per_frame_init_starts_as_an_image_autoencoder():
    """After inflation the latent of a 4-frame group is computed from one frame of it alone (no temporal mixing
    yet), and the frame-0 latent is that of the image alone."""
    from components.model.vae import per_frame_init

    vae = per_frame_init(build_vae(VaeConfig()))
    torch.manual_seed(0)
    video = torch.randint(0, 255, (1, 5, 64, 64, 3), dtype=torch.uint8)
    changed = video.clone()
    changed[:, 1:4] = torch.randint(0, 255, (1, 3, 64, 64, 3), dtype=torch.uint8)
    with torch.no_grad():
        a, b = encode_video(vae, video), encode_video(vae, changed)
        alone = encode_video(vae, video[:, :1])
    torch.testing.assert_close(a[:, :, :1], alone[:, :, :1])
    torch.testing.assert_close(a[:, :, 1], b[:, :, 1])  # frames 1-3 changed, frame 4 kept: same latent


def test_channels_last_inference_gives_the_same_video_and_restores_the_weights(vae):
    latents = torch.randn(2, 16, 5, 4, 4, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        fast = decode_latents(vae, latents)  # channels-last inside
        convs = [m for m in vae.modules() if isinstance(m, torch.nn.Conv3d)]
        assert convs and all(m.weight.is_contiguous() for m in convs)  # safetensors can save them again
        plain = vae.decode(latents * 1.0).sample  # default layout, no normalisation: compare the raw decoder
        with channels_last_on_cpu(vae):
            assert all(m.weight.is_contiguous(memory_format=torch.channels_last_3d) for m in convs)
            raw = vae.decode(latents * 1.0).sample
    torch.testing.assert_close(raw, plain, rtol=1e-4, atol=1e-5)
    assert fast.shape == plain.shape


def test_single_frame_convs_give_the_full_convs_values_and_gradients():
    """On one frame each causal conv's past taps multiply zero padding: the current-frame tap alone gives the same
    output and gradients (every tap non-zero here, not per-frame initialised); longer inputs take the full path."""
    from components.model.vae import single_frame_convs

    vae = build_vae(VaeConfig())
    with torch.no_grad():
        for conv in vae.modules():
            if isinstance(conv, torch.nn.Conv3d):
                conv.weight.normal_(0.0, 0.05, generator=torch.Generator().manual_seed(conv.weight.numel()))
    still = to_vae_input(clip(n_frames=1, size=32))

    def run(x):
        vae.zero_grad()
        out = vae.decode(vae.encode(x).latent_dist.mode()).sample
        (out ** 2).mean().backward()
        return out.detach(), [p.grad.clone() for p in vae.parameters() if p.grad is not None]

    full_out, full_grads = run(still)
    with single_frame_convs(vae):
        tapped_out, tapped_grads = run(still)
        video_out = run(to_vae_input(clip(n_frames=5, size=32)))[0]
    torch.testing.assert_close(tapped_out, full_out, rtol=1e-5, atol=1e-6)
    assert len(tapped_grads) == len(full_grads)
    for tapped, full in zip(tapped_grads, full_grads):
        torch.testing.assert_close(tapped, full, rtol=1e-4, atol=1e-6)
    assert "forward" not in vars(next(m for m in vae.modules() if isinstance(m, torch.nn.Conv3d)))  # restored
    torch.testing.assert_close(video_out, run(to_vae_input(clip(n_frames=5, size=32)))[0])
