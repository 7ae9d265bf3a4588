"""Deep joint source-channel coding for images (Bourtsoulatze, Kurka & Gündüz 2019) and the SNR-adaptive
attention-feature variant (ADJSCC, Xu et al. 2022), at laptop scale.

Encoder: conv stack (kernel ``kernel_size``, strides ``(2, 2, 1, 1, 1)``, PReLU) to ``latent_channels``
feature maps of ``H/4 × W/4``; the ``2k`` reals become ``k`` complex symbols (first half real parts,
second half imaginary parts) and are power-normalised per image, ``(1/k)‖z‖² = 1``. The decoder mirrors
it with transposed convolutions and a sigmoid. Bandwidth ratio ``ρ = k / n`` (complex channel uses per
real pixel value), e.g. ``latent_channels = 4`` on 28×28 gives ``k = 98``, ``ρ = 1/8``.

ADJSCC: after each of the first four layers of encoder and decoder an :class:`AFModule` rescales the
channels, ``f ⊙ sigmoid(FC2(ReLU(FC1([GAP(f), SNR]))))``.
"""

from __future__ import annotations

import torch
from torch import nn

from commlab.channels import complex_to_real, power_normalize, real_to_complex
from commlab.channels._checks import require_complex, require_real

STRIDES = (2, 2, 1, 1, 1)


def _snr_column(snr_db, batch: int, device) -> torch.Tensor:
    """Per-example SNR in dB as a ``[B, 1]`` tensor (the AF modules' side input, scaled by 1/10)."""
    if snr_db is None:
        raise ValueError("an SNR-adaptive (adaptive=True) model needs snr_db at encode and decode time")
    t = torch.as_tensor(snr_db, dtype=torch.float32, device=device)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"snr_db must be finite, got {snr_db!r}")
    return t.expand(batch).reshape(batch, 1) / 10.0


class AFModule(nn.Module):
    """Attention-feature module: channel-wise scaling conditioned on the SNR. ``[B, C, H, W]`` -> same shape."""

    def __init__(self, channels: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or max(channels // 16, 2)
        self.net = nn.Sequential(nn.Linear(channels + 1, hidden), nn.ReLU(), nn.Linear(hidden, channels), nn.Sigmoid())

    def forward(self, features: torch.Tensor, snr_column: torch.Tensor) -> torch.Tensor:
        pooled = features.mean(dim=(2, 3))
        return features * self.net(torch.cat([pooled, snr_column], dim=1))[:, :, None, None]


class _ConvStack(nn.Module):
    """Conv layers with PReLU between them and optional AF modules after the first four."""

    def __init__(self, layers: list[nn.Module], adaptive: bool, out_activation: nn.Module | None):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.acts = nn.ModuleList(nn.PReLU(layer.out_channels) for layer in layers[:-1])
        self.af = nn.ModuleList(AFModule(layer.out_channels) for layer in layers[:4]) if adaptive else None
        self.out_activation = out_activation

    def forward(self, h: torch.Tensor, snr_column: torch.Tensor | None) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i < len(self.acts):
                h = self.acts[i](h)
            if self.af is not None and i < len(self.af):
                h = self.af[i](h, snr_column)
        return h if self.out_activation is None else self.out_activation(h)


class DeepJSCC(nn.Module):
    """Conv Deep-JSCC autoencoder; the channel sits between :meth:`encode` and :meth:`decode`.

    Args:
        image_shape: ``(C, H, W)`` of the images (H, W divisible by 4), values in [0, 1].
        latent_channels: feature maps at the bottleneck (even); ``k = latent_channels·H·W/32`` symbols.
        filters: channels of the hidden conv layers.
        kernel_size: odd conv kernel size (5 in the paper).
        adaptive: add AF modules (ADJSCC); then ``snr_db`` must be passed to encode and decode.
    """

    def __init__(self, image_shape=(1, 28, 28), latent_channels: int = 4, filters: int = 32, kernel_size: int = 5,
                 adaptive: bool = False):
        super().__init__()
        c, h, w = (int(v) for v in image_shape)
        if h % 4 or w % 4:
            raise ValueError(f"image height and width must be divisible by 4, got {(h, w)}")
        if latent_channels < 2 or latent_channels % 2:
            raise ValueError(f"latent_channels must be an even integer >= 2, got {latent_channels}")
        if kernel_size % 2 == 0 or kernel_size < 1:
            raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
        self.image_shape = (c, h, w)
        self.latent_shape = (latent_channels, h // 4, w // 4)
        self.adaptive = bool(adaptive)
        pad = kernel_size // 2
        widths = [c, filters, filters, filters, filters, latent_channels]
        enc = [nn.Conv2d(widths[i], widths[i + 1], kernel_size, STRIDES[i], pad) for i in range(5)]
        back = widths[::-1]
        dec = [nn.ConvTranspose2d(back[i], back[i + 1], kernel_size, STRIDES[4 - i], pad,
                                  output_padding=STRIDES[4 - i] - 1) for i in range(5)]
        self.encoder = _ConvStack(enc, adaptive, None)
        self.decoder = _ConvStack(dec, adaptive, nn.Sigmoid())

    @property
    def n_symbols(self) -> int:
        """Complex channel uses per image, ``k``."""
        c, h, w = self.latent_shape
        return c * h * w // 2

    @property
    def bandwidth_ratio(self) -> float:
        """``ρ = k / n`` with ``n = C·H·W`` real source samples."""
        c, h, w = self.image_shape
        return self.n_symbols / (c * h * w)

    def encode(self, x: torch.Tensor, snr_db=None) -> torch.Tensor:
        """Images ``[B, C, H, W]`` in [0, 1] -> unit-power complex symbols ``[B, k]``."""
        require_real("x", x)
        if tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(f"x must be [batch, {', '.join(map(str, self.image_shape))}], got {tuple(x.shape)}")
        snr = _snr_column(snr_db, x.shape[0], x.device) if self.adaptive else None
        return power_normalize(real_to_complex(self.encoder(x, snr)))

    def decode(self, y: torch.Tensor, snr_db=None) -> torch.Tensor:
        """Received symbols ``[B, k]`` (complex) -> images ``[B, C, H, W]`` in (0, 1)."""
        require_complex("y", y)
        if y.shape[-1] != self.n_symbols:
            raise ValueError(f"y must carry {self.n_symbols} symbols per image, got {y.shape[-1]}")
        snr = _snr_column(snr_db, y.shape[0], y.device) if self.adaptive else None
        return self.decoder(complex_to_real(y, self.latent_shape), snr)

    def forward(self, x: torch.Tensor, channel: nn.Module, *, generator: torch.Generator | None,
                snr_db=None) -> torch.Tensor:
        """``decode(channel(encode(x)))``; ``snr_db`` (scalar or ``[B]``) is passed to the channel too."""
        z = self.encode(x, snr_db)
        y = channel(z, generator=generator) if snr_db is None else channel(z, generator=generator, snr_db=snr_db)
        return self.decode(y, snr_db)
