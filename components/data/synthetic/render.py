"""The renderer of the synthetic world: frames drawn from an identity, keypoints and mouth opening alone, so the
skeleton fully determines the pose."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from components.data.synthetic.identity import FaceGeometry, Identity
from components.data.synthetic.motion import JOINTS

__all__ = ["render_frames"]

SUPERSAMPLE = 4  # draw at 4x and box-downsample: anti-aliased edges at 64 px


def _background(identity: Identity, size: int) -> Image.Image:
    ramp = np.linspace(0.0, 1.0, size)[:, None] * np.ones((1, size))
    if not identity.background_vertical:
        ramp = ramp.T
    a, b = np.array(identity.background_a, float), np.array(identity.background_b, float)
    return Image.fromarray((a + ramp[..., None] * (b - a)).astype(np.uint8))


def _shade(colour: tuple[int, int, int], factor: float) -> tuple[int, int, int]:
    return tuple(int(np.clip(c * factor, 0, 255)) for c in colour)  # type: ignore[return-value]


def _ellipse(draw: ImageDraw.ImageDraw, cx: float, cy: float, rx: float, ry: float, fill) -> None:
    draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=fill)


def _draw_frame(
    canvas: Image.Image, ident: Identity, geo: FaceGeometry, kp: np.ndarray, opening: float, s: float, r: float
) -> None:
    """Draw one frame at supersampled scale s (pixels per output pixel). kp: [10, 2] output pixels."""
    d = ImageDraw.Draw(canvas)
    p = {name: kp[i] * s for i, name in enumerate(JOINTS)}
    fw, fh = geo.face_w * s, geo.face_h * s
    hx, hy = p["head"]
    skin_dark, cloth_dark = _shade(ident.skin, 0.85), _shade(ident.clothes, 0.8)

    if ident.hair_style == "long":  # hair behind the head, down to the shoulders
        d.rounded_rectangle([hx - 0.58 * fw, hy - 0.45 * fh, hx + 0.58 * fw, p["neck"][1] + 0.04 * r * s],
                            radius=0.3 * fw, fill=ident.hair)
    # torso and neck
    ls, rs = p["l_shoulder"], p["r_shoulder"]
    bottom = r * s + 4 * s
    d.polygon([tuple(rs), tuple(ls), (ls[0] + 0.03 * r * s, bottom), (rs[0] - 0.03 * r * s, bottom)],
              fill=ident.clothes)
    limb = 0.09 * r * s
    for sh in (ls, rs):
        _ellipse(d, sh[0], sh[1] + limb * 0.1, limb * 0.6, limb * 0.6, ident.clothes)
    d.line([tuple(p["neck"]), (hx, hy)], fill=skin_dark, width=int(0.16 * r * s))
    _ellipse(d, p["neck"][0], p["neck"][1], 0.09 * r * s, 0.04 * r * s, skin_dark)
    # head: ears, face, hair, eyes, brows, nose, mouth
    for side in (-1, 1):
        _ellipse(d, hx + side * 0.5 * fw, hy, 0.07 * fw, 0.11 * fh, skin_dark)
    _ellipse(d, hx, hy, fw / 2, fh / 2, ident.skin)
    _draw_hair(d, ident, hx, hy, fw, fh)
    eye_y = hy - 0.05 * fh
    for side in (-1, 1):
        ex = hx + side * ident.eye_spacing * fw / 2
        ew, eh = 0.085 * fw * ident.eye_size, 0.055 * fh * ident.eye_size
        _ellipse(d, ex, eye_y, ew, eh, (245, 245, 240))
        _ellipse(d, ex, eye_y, eh * 0.95, eh * 0.95, ident.iris)
        _ellipse(d, ex, eye_y, eh * 0.45, eh * 0.45, (10, 10, 10))
        d.line([(ex - ew, eye_y - 2.2 * eh), (ex + ew, eye_y - 2.4 * eh)], fill=_shade(ident.hair, 0.8),
               width=max(1, int(0.03 * fh)))
    d.line([(hx, hy + 0.02 * fh), (hx - 0.02 * fw, hy + 0.12 * fh)], fill=_shade(ident.skin, 0.7),
           width=max(1, int(0.025 * fw)))
    _draw_mouth(d, ident, geo, hx, hy + geo.mouth_dy * s, opening, s)
    # arms in front of the torso: sleeves to the wrist, then skin
    for side in ("l", "r"):
        sh, el, wr, ha = p[f"{side}_shoulder"], p[f"{side}_elbow"], p[f"{side}_wrist"], p[f"{side}_hand"]
        d.line([tuple(sh), tuple(el), tuple(wr)], fill=cloth_dark, width=int(limb), joint="curve")
        _ellipse(d, el[0], el[1], limb / 2, limb / 2, cloth_dark)
        d.line([tuple(wr), tuple(ha)], fill=ident.skin, width=int(0.6 * limb))
        _ellipse(d, ha[0], ha[1], 0.5 * limb, 0.5 * limb, ident.skin)


def _draw_hair(d: ImageDraw.ImageDraw, ident: Identity, hx: float, hy: float, fw: float, fh: float) -> None:
    if ident.hair_style == "buzz":  # short stubble: hair colour blended into the skin, higher hairline
        hair = tuple((np.array(ident.hair) + np.array(ident.skin)) // 2)
        hairline = hy - 0.3 * fh
    else:
        hair, hairline = ident.hair, hy - 0.22 * fh
    top = hy - 0.56 * fh
    # upper half of an ellipse whose centre line is the hairline: a cap over the top of the head
    d.chord([hx - 0.54 * fw, top, hx + 0.54 * fw, 2 * hairline - top], 180, 360, fill=hair)
    if ident.hair_style == "bun":
        _ellipse(d, hx, hy - 0.58 * fh, 0.18 * fw, 0.14 * fh, hair)
    elif ident.hair_style == "curly":
        for angle in np.linspace(np.pi * 1.05, np.pi * 1.95, 7):
            _ellipse(d, hx + 0.5 * fw * np.cos(angle), hy + 0.5 * fh * np.sin(angle), 0.1 * fw, 0.1 * fw, hair)
    elif ident.hair_style == "long":  # side locks framing the face
        for side in (-1, 1):
            x0 = hx + side * 0.5 * fw
            d.rectangle([min(x0, x0 - side * 0.08 * fw), hy - 0.3 * fh, max(x0, x0 - side * 0.08 * fw), hy + 0.2 * fh],
                        fill=hair)


def _draw_mouth(d: ImageDraw.ImageDraw, ident: Identity, geo: FaceGeometry, mx: float, my: float, opening: float,
                s: float) -> None:
    rx = geo.mouth_w * s / 2
    ry = (geo.mouth_h_min + opening * (geo.mouth_h_max - geo.mouth_h_min)) * s / 2
    lip = 0.07 * geo.mouth_w * s
    _ellipse(d, mx, my, rx + lip * 0.3, ry + lip, ident.lips)
    _ellipse(d, mx, my, rx - lip * 0.3, ry, (45, 10, 20))  # dark interior: its area grows with the opening
    if ry > 3 * lip:  # upper teeth show once the mouth is well open
        d.chord([mx - rx * 0.8, my - ry, mx + rx * 0.8, my + ry], 205, 335, fill=(235, 232, 222))


def render_frames(
    identity: Identity, geometry: FaceGeometry, keypoints: np.ndarray, mouth_open: np.ndarray, resolution: int
) -> np.ndarray:
    """uint8 RGB frames [T, R, R, 3] drawn from keypoints [T,10,2] and mouth opening [T] alone."""
    s = SUPERSAMPLE
    background = _background(identity, resolution * s)
    frames = np.empty((len(keypoints), resolution, resolution, 3), np.uint8)
    for i, (kp, opening) in enumerate(zip(keypoints, mouth_open)):
        canvas = background.copy()
        _draw_frame(canvas, identity, geometry, kp, float(opening), s, resolution)
        frames[i] = np.asarray(canvas.reduce(s))  # box filter: exact area average of the 4x4 block
    return frames
