"""The referee (as in LHCb's pidgan): a small classifier trained alongside the GAN to tell real
from generated rows, whose ROC AUC on fresh batches puts every objective on one scale while it
trains (0.5: it cannot tell them apart; 1: it always can).

It sees what the critic sees: the features (and conditions) in the model's units. It takes one
Adam step per generator step, on that step's real batch and (detached) generated batch, and is
measured every `training.referee_every` steps on a fresh real batch and a fresh generated batch
drawn with its own random generator, so it never changes the GAN's training: a run with a
referee trains exactly the weights of the same run without one. Its state (weights, optimiser,
random generator) is checkpointed, so resumed runs stay exact.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import rankdata
from torch import Tensor, nn

WIDTH = 64
LR = 1e-3
SEED_OFFSET = 0x5EF  # the referee's random streams: seed + this


def roc_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Mann-Whitney ROC AUC of scores: P(score(pos) > score(neg)), ties counted half."""
    ranks = rankdata(np.concatenate([pos, neg]))
    n_pos, n_neg = len(pos), len(neg)
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


class Referee:
    def __init__(self, n_features: int, n_conditions: int, seed: int, device: torch.device):
        self.device = device
        with torch.random.fork_rng(devices=[]):  # leave the GAN's RNG stream untouched
            torch.manual_seed(seed + SEED_OFFSET)
            self.net = nn.Sequential(
                nn.Linear(n_features + n_conditions, WIDTH), nn.LeakyReLU(0.2),
                nn.Linear(WIDTH, WIDTH), nn.LeakyReLU(0.2), nn.Linear(WIDTH, 1),
            ).to(device)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=LR)
        self.rng = torch.Generator().manual_seed(seed + SEED_OFFSET)

    def _logits(self, x: Tensor, a: Tensor | None) -> Tensor:
        x = x.reshape(len(x), -1)
        return self.net(torch.cat([a, x], 1) if a is not None else x).squeeze(1)

    def update(self, real: Tensor, fake: Tensor, cond: Tensor | None, w: Tensor | None) -> Tensor:
        """One step of binary cross-entropy: real -> 1, generated -> 0. Returns the loss, a
        detached tensor: no device-to-host copy each step (a sync on a GPU)."""
        fake = fake.detach()
        logits = torch.cat([self._logits(real, cond), self._logits(fake, cond)])
        target = torch.cat([torch.ones(len(real), device=logits.device),
                            torch.zeros(len(fake), device=logits.device)])
        weight = torch.cat([w, w]) if w is not None else None
        loss = nn.functional.binary_cross_entropy_with_logits(logits, target, weight=weight)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.detach()

    @torch.no_grad()
    def auc(self, generator: nn.Module, x_all: Tensor, a_all: Tensor | None, n: int,
            latent_dim: int) -> float:
        """ROC AUC on n fresh real rows and n rows generated at their conditions (the
        generator in eval mode, as exported)."""
        idx = torch.randint(0, len(x_all), (n,), generator=self.rng).to(x_all.device)
        z = torch.randn(n, latent_dim, generator=self.rng).to(x_all.device)
        cond = a_all[idx] if a_all is not None else None
        was_training = generator.training
        generator.eval()
        try:
            fake = generator(z, cond)
        finally:
            generator.train(was_training)
        pos = self._logits(x_all[idx], cond).cpu().numpy()
        neg = self._logits(fake, cond).cpu().numpy()
        return roc_auc(pos, neg)

    def state_dict(self) -> dict:
        return {"net": self.net.state_dict(), "opt": self.opt.state_dict(),
                "rng": self.rng.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["opt"])
        self.rng.set_state(state["rng"].cpu())
