"""Sparse autoencoder of DEP: ``Linear + GELU`` encoder and decoder, KL sparsity."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SparseAutoEncoder(nn.Module):
    """``x -> z = GELU(W_e x) -> x' = GELU(W_d z)``.

    Args:
        dim: input size (the encoder's vector size).
        hidden: code size (DEP: ``dim // 2``).
        rho: target mean activation of each code unit.
    """

    def __init__(self, dim: int, hidden: int, rho: float = 0.05) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(dim, hidden), nn.GELU())
        self.decoder = nn.Sequential(nn.Linear(hidden, dim), nn.GELU())
        self.rho = rho

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x: (batch, tokens, dim)`` -> ``(z: (batch, tokens, hidden), x_recon: like x)``."""
        z = self.encoder(x)
        return z, self.decoder(z)

    def losses(
        self, x: torch.Tensor, z: torch.Tensor, x_recon: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Smooth-L1 reconstruction and KL sparsity over the valid tokens.

        ``rho_hat`` is each code unit's mean activation over the token axis (valid tokens
        only), clamped to ``(eps, 1 - eps)`` as in DEP (GELU can be negative).

        Args:
            mask: ``(batch, tokens)`` True for real (non-padding) tokens.
        Returns:
            ``(recon, kl)`` scalars.
        """
        m = mask.to(x.dtype).unsqueeze(-1)
        n_valid = m.sum().clamp(min=1)
        recon = (F.smooth_l1_loss(x_recon, x, reduction="none") * m).sum() / (n_valid * x.shape[-1])
        per_row = m.sum(1).clamp(min=1)  # (batch, 1)
        rho_hat = ((z * m).sum(1) / per_row).clamp(1e-6, 1 - 1e-6)  # (batch, hidden)
        rho = self.rho
        kl = rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))
        rows = mask.any(1)
        kl = kl[rows].mean() if rows.any() else kl.sum() * 0
        return recon, kl
