"""Capacity estimate for the wan profile: tokens, memory per GPU under FSDP, step time, GPU-hours.

    python infra/capacity.py [--gpus 8] [--peak-tflops 312] [--mfu 0.35] [--gpu-mem-gb 80]
                             [--frames 81] [--height 480] [--width 832]

Standard library only, so that the numbers in infra/README.md can be re-derived anywhere. Every assumption is a
named constant below; change one and re-run. Conventions: 1 multiply-add = 2 FLOPs; GB = 1e9 bytes.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass


# ---------------------------------------------------------------------------------------------- assumptions
@dataclass(frozen=True)
class Backbone:
    """Wan2.1-I2V-14B as diffusers' WanTransformer3DModel (Wan-AI/Wan2.1-I2V-14B-480P-Diffusers config)."""

    dim: int = 5120
    layers: int = 40
    heads: int = 40
    ffn: int = 13824
    in_channels: int = 36  # 16 noisy latent + 16 reference-image latent + 4 mask
    out_channels: int = 16
    patch: tuple[int, int, int] = (1, 2, 2)
    freq_dim: int = 256
    text_dim: int = 4096  # umT5-XXL hidden size
    text_tokens: int = 512
    image_dim: int = 1280  # CLIP ViT-H/14 hidden size (I2V image context)
    image_tokens: int = 257


@dataclass(frozen=True)
class Clip:
    frames: int = 81  # 3.24 s at 25 fps
    height: int = 480
    width: int = 832
    vae_temporal: int = 4  # causal VAE: T' = 1 + (T - 1) / 4
    vae_spatial: int = 8


@dataclass(frozen=True)
class Modulation:
    """Our motion modulation (design.md section 4): per block and per modality, a cross-attention at model width
    (q, k, v, out projections with bias + RMSNorm on q and k), fed by motion tokens projected to model width."""

    rho: int = 4  # video frames per latent frame
    audio_feat_dim: int = 768  # wav2vec2-base hidden size
    audio_tokens_per_frame: int = 10  # 2 wav2vec2 frames per video frame x a 5-frame window
    skeleton_feat_dim: int = 128  # output channels of the light conv skeleton encoder
    skeleton_grid: tuple[int, int] = (15, 26)  # skeleton encoder output grid (1/32 of 480x832)
    skeleton_encoder_params: int = 2_000_000  # light conv net (assumed size)


@dataclass(frozen=True)
class Lora:
    """DPO / TLPO adapters: rank r on the self-attention q, k, v, out and the two FFN linears of every block."""

    rank: int = 64


@dataclass(frozen=True)
class Schedule:
    """Hallo4 section 4: 8 A100s; modulation training 10k iterations at batch 8; DPO 12k iterations at batch 8."""

    phase_iters: int = 10_000
    phase_batch: int = 8  # clips per step
    dpo_iters: int = 12_000
    dpo_batch: int = 8  # preference pairs per step (a pair = winner + loser clip)
    tlpo_experts: int = 3  # lip-sync, motion, visual quality (FantasyTalking2)
    sample_steps: int = 40  # denoising steps per generated clip (candidates stage)
    sample_cfg_passes: int = 2  # conditional + audio-dropped forward per step


@dataclass(frozen=True)
class Hardware:
    gpus: int = 8
    peak_tflops: float = 312.0  # A100 80GB, dense bf16
    mfu: float = 0.35  # achieved / peak model FLOPs (assumed)
    gpu_mem_gb: float = 80.0


# ---------------------------------------------------------------------------------------------- sizes
def linear(n_in: int, n_out: int, bias: bool = True) -> int:
    return n_in * n_out + (n_out if bias else 0)


def latent_grid(clip: Clip, bb: Backbone) -> tuple[int, int, int]:
    """(T', H/16, W/16): latent frames and the token grid after the 1x2x2 patchify."""
    t = 1 + (clip.frames - 1) // clip.vae_temporal
    h = clip.height // clip.vae_spatial // bb.patch[1]
    w = clip.width // clip.vae_spatial // bb.patch[2]
    return t, h, w


def backbone_block_params(bb: Backbone) -> int:
    d, f = bb.dim, bb.ffn
    self_attn = 4 * linear(d, d) + 2 * d  # q k v out + RMSNorm(q), RMSNorm(k)
    cross_attn = 4 * linear(d, d) + 2 * d + 2 * linear(d, d) + d  # + image k/v projections + RMSNorm(image k)
    cross_norm = 2 * d  # affine LayerNorm before the cross-attention
    ffn = linear(d, f) + linear(f, d)
    modulation_table = 6 * d  # adaLN shift/scale/gate table
    return self_attn + cross_attn + cross_norm + ffn + modulation_table


def backbone_params(bb: Backbone) -> int:
    d = bb.dim
    patchify = bb.in_channels * bb.patch[0] * bb.patch[1] * bb.patch[2] * d + d
    time = linear(bb.freq_dim, d) + linear(d, d) + linear(d, 6 * d)
    text = linear(bb.text_dim, d) + linear(d, d)
    image = 2 * bb.image_dim + linear(bb.image_dim, bb.image_dim) + linear(bb.image_dim, d) + 2 * d
    head = linear(d, bb.out_channels * bb.patch[0] * bb.patch[1] * bb.patch[2]) + 2 * d
    return patchify + time + text + image + bb.layers * backbone_block_params(bb) + head


def modulation_block_params(bb: Backbone) -> int:
    return 4 * linear(bb.dim, bb.dim) + 2 * bb.dim


def audio_modulation_params(bb: Backbone, mod: Modulation) -> int:
    return linear(mod.audio_feat_dim, bb.dim) + bb.layers * modulation_block_params(bb)


def skeleton_modulation_params(bb: Backbone, mod: Modulation) -> int:
    return mod.skeleton_encoder_params + linear(mod.skeleton_feat_dim, bb.dim) + bb.layers * modulation_block_params(bb)


def lora_params(bb: Backbone, lora: Lora) -> int:
    d, f, r = bb.dim, bb.ffn, lora.rank
    per_block = 4 * r * (d + d) + r * (d + f) + r * (f + d)
    return bb.layers * per_block


# ---------------------------------------------------------------------------------------------- FLOPs
@dataclass(frozen=True)
class Flops:
    """Forward FLOPs of one clip, split by what the backward pass must do with them."""

    frozen_linear: float  # matmuls with frozen weights on the gradient path: backward needs input-grads only
    trainable_linear: float  # matmuls with trained weights: backward needs input- and weight-grads
    attention: float  # QK^T and AV (flash attention): backward costs 2x forward
    no_grad: float  # frozen matmuls whose inputs need no gradient (text/image K/V)

    @property
    def forward(self) -> float:
        return self.frozen_linear + self.trainable_linear + self.attention + self.no_grad

    def train(self, checkpointing: bool = True) -> float:
        """Forward (+ recompute under per-block checkpointing) + backward."""
        recompute = self.forward if checkpointing else 0.0
        backward = self.frozen_linear + 2 * self.trainable_linear + 2 * self.attention
        return self.forward + recompute + backward


def clip_flops(bb: Backbone, clip: Clip, mod: Modulation, *, audio: bool, skeleton: bool,
               train: str, lora: Lora | None = None) -> Flops:
    """train: 'audio' (phase1), 'skeleton' (phase2) or 'lora' (DPO policy); the rest is frozen."""
    d, f, L = bb.dim, bb.ffn, bb.layers
    t, h, w = latent_grid(clip, bb)
    n = t * h * w  # video tokens
    audio_tokens = t * mod.rho * mod.audio_tokens_per_frame
    skel_per_frame = mod.rho * mod.skeleton_grid[0] * mod.skeleton_grid[1]
    mm = lambda rows, n_in, n_out: 2.0 * rows * n_in * n_out  # noqa: E731  (one matmul)

    frozen = trainable = attention = no_grad = 0.0
    # backbone, per block
    frozen += L * (4 * mm(n, d, d) + 2 * mm(n, d, d) + 2 * mm(n, d, f))  # self-attn qkvo, cross q/o, FFN
    no_grad += L * 2 * (mm(bb.text_tokens, d, d) + mm(bb.image_tokens, d, d))  # text k/v, image k/v
    attention += L * (4.0 * n * n * d + 4.0 * n * (bb.text_tokens + bb.image_tokens) * d)
    # patchify, timestep/text/image embedders, output head (small)
    frozen += mm(n, bb.in_channels * 4, d) + mm(n, d, bb.out_channels * 4)
    no_grad += mm(bb.text_tokens, bb.text_dim, d) + mm(bb.text_tokens, d, d) + mm(bb.image_tokens, bb.image_dim, d)
    if lora is not None:  # adapters on self-attn q k v o and FFN: x -> A -> B, rank r
        r = lora.rank
        trainable += L * (4 * (mm(n, d, r) + mm(n, r, d)) + mm(n, d, r) + mm(n, r, f) + mm(n, f, r) + mm(n, r, d))
    for on, name, tokens, keys_per_frame, feat in (
        (audio, "audio", audio_tokens, mod.rho * mod.audio_tokens_per_frame, mod.audio_feat_dim),
        (skeleton, "skeleton", t * skel_per_frame, skel_per_frame, mod.skeleton_feat_dim),
    ):
        if not on:
            continue
        linear_flops = mm(tokens, feat, d) + L * (2 * mm(n, d, d) + 2 * mm(tokens, d, d))  # in-proj; q,o; k,v
        if train == name:
            trainable += linear_flops
        else:
            frozen += linear_flops
        attention += L * 4.0 * n * keys_per_frame * d  # frame-aligned: each latent frame sees its own group
    return Flops(frozen, trainable, attention, no_grad)


# ---------------------------------------------------------------------------------------------- memory
def activation_bytes_per_clip(bb: Backbone, clip: Clip, n_modulations: int) -> tuple[float, float]:
    """(checkpoint boundaries, live block) in bytes for one clip, bf16 activations.

    With per-block checkpointing only each block's input (n x d) is kept for the whole step; one block's internals
    live during its recompute + backward. Their count is an estimate: ~22 n x d tensors for the backbone block
    (norm outputs, q k v before/after norm and rotary, attention outputs, residuals), ~5 per modulation
    cross-attention, 6 more for the fp32 LayerNorm inputs, 4 for gradients in flight, and 2 n x ffn for the FFN
    hidden state before/after GELU.
    """
    t, h, w = latent_grid(clip, bb)
    n = t * h * w
    boundaries = bb.layers * n * bb.dim * 2
    live = (22 + 5 * n_modulations + 6 + 4) * n * bb.dim * 2 + 2 * n * bb.ffn * 2
    return boundaries, live


def fsdp_weight_bytes_per_gpu(frozen: int, trainable: int, gpus: int, block_params: int, block_trainable: int) -> dict[str, float]:
    """FSDP full shard: frozen bf16 weights and fp32 trainable state are split over all ranks; each rank also holds
    the all-gathered bf16 weights of ~2 layers (current + prefetched) and the unsharded fp32 grads of one layer."""
    return {
        "frozen bf16 (2 B/param, sharded)": 2.0 * frozen / gpus,
        "trainable fp32 param+grad+Adam m,v (16 B/param, sharded)": 16.0 * trainable / gpus,
        "unsharded working set (2 layers bf16 + 1 layer fp32 grads)": 2 * 2.0 * block_params + 4.0 * block_trainable,
    }


# ---------------------------------------------------------------------------------------------- report
def gb(x: float) -> str:
    return f"{x / 1e9:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, default=Hardware.gpus)
    parser.add_argument("--peak-tflops", type=float, default=Hardware.peak_tflops)
    parser.add_argument("--mfu", type=float, default=Hardware.mfu)
    parser.add_argument("--gpu-mem-gb", type=float, default=Hardware.gpu_mem_gb)
    parser.add_argument("--frames", type=int, default=Clip.frames, help="video frames per clip (4k+1)")
    parser.add_argument("--height", type=int, default=Clip.height, help="multiple of 16")
    parser.add_argument("--width", type=int, default=Clip.width, help="multiple of 16")
    args = parser.parse_args()
    if (args.frames - 1) % Clip.vae_temporal or args.height % 16 or args.width % 16:
        parser.error("frames must be 4k+1 and height/width multiples of 16 (VAE 4x8x8, patch 1x2x2)")
    hw = Hardware(args.gpus, args.peak_tflops, args.mfu, args.gpu_mem_gb)
    bb, mod, lora, sched = Backbone(), Modulation(), Lora(), Schedule()
    clip = Clip(frames=args.frames, height=args.height, width=args.width)

    t, h, w = latent_grid(clip, bb)
    n = t * h * w
    n_bb = backbone_params(bb)
    n_audio = audio_modulation_params(bb, mod)
    n_skel = skeleton_modulation_params(bb, mod)
    n_lora = lora_params(bb, lora)
    layer = backbone_block_params(bb) + 2 * modulation_block_params(bb)
    sustained = hw.gpus * hw.peak_tflops * 1e12 * hw.mfu

    print("## Sizes\n")
    print(f"- latent {t} x {h * 2} x {w * 2} (T' = 1 + ({clip.frames}-1)/{clip.vae_temporal}, {clip.height}/{clip.vae_spatial}, "
          f"{clip.width}/{clip.vae_spatial}); tokens after 1x2x2 patchify: {t} x {h} x {w} = {n:,}")
    print(f"- audio tokens {t * mod.rho * mod.audio_tokens_per_frame:,} ({t} x {mod.rho} x {mod.audio_tokens_per_frame}); "
          f"skeleton tokens {t * mod.rho * mod.skeleton_grid[0] * mod.skeleton_grid[1]:,} "
          f"({t} x {mod.rho} x {mod.skeleton_grid[0]}x{mod.skeleton_grid[1]}); text {bb.text_tokens}, image {bb.image_tokens}")
    print(f"- parameters: backbone {n_bb / 1e9:.2f} B ({bb.layers} x {backbone_block_params(bb) / 1e6:.1f} M per block "
          f"+ {(n_bb - bb.layers * backbone_block_params(bb)) / 1e6:.0f} M embedders/head)")
    print(f"- audio modulation {n_audio / 1e9:.2f} B, skeleton modulation {n_skel / 1e9:.2f} B "
          f"({bb.layers} x {modulation_block_params(bb) / 1e6:.1f} M each), LoRA r={lora.rank} {n_lora / 1e6:.0f} M")

    stages = [
        # name, frozen params, trainable params, trainable per layer, clips per step per GPU, flops per step, iters
        ("phase1 (audio)", n_bb, n_audio, modulation_block_params(bb), 1,
         sched.phase_batch * clip_flops(bb, clip, mod, audio=True, skeleton=False, train="audio").train(),
         sched.phase_iters),
        ("phase2 (skeleton)", n_bb + n_audio, n_skel, modulation_block_params(bb), 1,
         sched.phase_batch * clip_flops(bb, clip, mod, audio=True, skeleton=True, train="skeleton").train(),
         sched.phase_iters),
    ]
    policy = clip_flops(bb, clip, mod, audio=True, skeleton=True, train="lora", lora=lora)
    reference = clip_flops(bb, clip, mod, audio=True, skeleton=True, train="none")
    dpo_step = sched.dpo_batch * 2 * (policy.train() + reference.forward)
    stages.append(("dpo (LoRA)", n_bb + n_audio + n_skel, n_lora, n_lora // bb.layers, 2, dpo_step, sched.dpo_iters))

    print(f"\n## Memory per GPU in GB (FSDP full shard over {hw.gpus} GPUs, micro-batch = global batch / {hw.gpus}; "
          f"'fits' = under 90% of {hw.gpu_mem_gb:.0f} GB)\n")
    print("| stage | frozen bf16 | trainable fp32 state | FSDP working set | activations (boundaries + live block) | total | fits in "
          f"{hw.gpu_mem_gb:.0f} GB |")
    print("|---|---|---|---|---|---|---|")
    for name, frozen, trainable, layer_trainable, micro, _, _ in stages:
        weights = fsdp_weight_bytes_per_gpu(frozen, trainable, hw.gpus, layer, layer_trainable)
        n_mod = 1 if name.startswith("phase1") else 2
        boundaries, live = activation_bytes_per_clip(bb, clip, n_mod)
        acts = micro * (boundaries + live)
        total = sum(weights.values()) + acts
        w_frozen, w_train, w_work = weights.values()
        print(f"| {name} | {gb(w_frozen)} | {gb(w_train)} | {gb(w_work)} | {micro} x ({gb(boundaries)} + {gb(live)}) = "
              f"{gb(acts)} | **{gb(total)}** | {'yes' if total < hw.gpu_mem_gb * 1e9 * 0.9 else 'NO'} |")

    print(f"\n## Compute (sustained {hw.gpus} x {hw.peak_tflops:.0f} TFLOPS x MFU {hw.mfu:.2f} = {sustained / 1e15:.2f} PFLOP/s)\n")
    print("| stage | forward / clip | train FLOPs / step | step time | iterations | wall-clock | GPU-hours |")
    print("|---|---|---|---|---|---|---|")
    total_gpu_h = 0.0
    rows = []
    for name, _, _, _, _, step_flops, iters in stages:
        fwd = {"phase1 (audio)": clip_flops(bb, clip, mod, audio=True, skeleton=False, train="audio").forward,
               "phase2 (skeleton)": reference.forward, "dpo (LoRA)": policy.forward}[name]
        step_s = step_flops / sustained
        gpu_h = iters * step_s * hw.gpus / 3600
        total_gpu_h += gpu_h
        rows.append((name, fwd, step_flops, step_s, iters, gpu_h))
        print(f"| {name} | {fwd / 1e15:.2f} PFLOP | {step_flops / 1e15:.1f} PFLOP | {step_s:.0f} s | {iters:,} | "
              f"{iters * step_s / 3600:.0f} h | {gpu_h:,.0f} |")
    print(f"| **total** (phase1 + phase2 + dpo) | | | | | {total_gpu_h / hw.gpus:,.0f} h | **{total_gpu_h:,.0f}** |")
    dpo_gpu_h = rows[-1][-1]
    print(f"\nTLPO: {sched.tlpo_experts} experts x {sched.dpo_iters:,} DPO iterations would add "
          f"{sched.tlpo_experts * dpo_gpu_h:,.0f} GPU-hours (gate training not counted).")
    gen_flops = sched.sample_steps * sched.sample_cfg_passes * reference.forward
    print(f"Generating one clip ({sched.sample_steps} steps x {sched.sample_cfg_passes} passes, VAE decode not counted): "
          f"{gen_flops / 1e15:.0f} PFLOP = {gen_flops / (hw.peak_tflops * 1e12 * hw.mfu) / 60:.1f} GPU-minutes.")

    print("\n## Arithmetic for one phase1 step\n")
    p1 = clip_flops(bb, clip, mod, audio=True, skeleton=False, train="audio")
    print(f"- forward per clip = frozen matmuls {p1.frozen_linear / 1e15:.3f} + trainable matmuls "
          f"{p1.trainable_linear / 1e15:.3f} + attention {p1.attention / 1e15:.3f} + no-grad {p1.no_grad / 1e15:.4f} "
          f"= {p1.forward / 1e15:.3f} PFLOP")
    print(f"- train per clip = forward + recompute + backward (frozen x1, trainable x2, attention x2) = "
          f"{p1.forward / 1e15:.3f} x 2 + {p1.frozen_linear / 1e15:.3f} + 2 x {p1.trainable_linear / 1e15:.3f} "
          f"+ 2 x {p1.attention / 1e15:.3f} = {p1.train() / 1e15:.2f} PFLOP")
    print(f"- step = {sched.phase_batch} clips x {p1.train() / 1e15:.2f} = {sched.phase_batch * p1.train() / 1e15:.1f} PFLOP; "
          f"/ {sustained / 1e15:.3f} PFLOP/s = {sched.phase_batch * p1.train() / sustained:.0f} s")
    rule = sched.phase_batch * (6 * (n_bb + n_audio) * n + 12 * bb.layers * bb.dim * n * n)
    print(f"- cross-check, rule of thumb 6*N*tokens + 12*layers*d*tokens^2 per clip (N = {(n_bb + n_audio) / 1e9:.1f} B, "
          f"full fine-tune, no recompute): {rule / 1e15:.1f} PFLOP per step")


if __name__ == "__main__":
    main()
