"""The mean-reverting IR-SDE of DA-CLIP / IR-SDE (Luo et al.): schedule arrays and single reverse steps.

States run from ``t = T`` (``x_T = mu + max_sigma * z``) down to ``t = 0``; ``mu`` is the degraded image.
All steps take their Gaussian noise ``z`` as an argument, so the caller owns the randomness (a seeded
``torch.Generator``) and a trajectory can be replayed with injected noise. Arrays are float32, computed in the
same order of operations as the published implementation.
"""

from __future__ import annotations

import math

import torch

from ..errors import InputError

SCHEDULES = ("cosine", "linear", "constant")


def _theta_schedule(name: str, steps: int) -> torch.Tensor:
    if name == "cosine":
        n = steps + 2  # two extra points so the schedule can be truncated at both ends
        x = torch.linspace(0, n, n + 1, dtype=torch.float32)
        s = 0.008
        alphas_cumprod = torch.cos(((x / n) + s) / (1 + s) * math.pi * 0.5) ** 2
        alphas_cumprod = alphas_cumprod / alphas_cumprod[0]
        return 1 - alphas_cumprod[1:-1]
    if name == "linear":
        n = steps + 1
        scale = 1000 / n
        return torch.linspace(scale * 0.0001, scale * 0.02, n, dtype=torch.float32)
    if name == "constant":
        return torch.ones(steps + 1, dtype=torch.float32)
    raise InputError(f"unknown IR-SDE schedule {name!r}; choose one of {SCHEDULES}")


class IRSDE:
    """IR-SDE with ``T`` steps. ``max_sigma >= 1`` is read on the 0..255 scale (50 → 50/255), as officially."""

    def __init__(self, max_sigma: float = 50, T: int = 100, eps: float = 0.005, schedule: str = "cosine") -> None:
        if T < 1:
            raise InputError(f"T must be at least 1, got {T}")
        if not 0.0 < eps < 1.0:
            raise InputError(f"eps must be in (0, 1), got {eps}")
        self.T = int(T)
        self.schedule = schedule
        self.eps = float(eps)
        self.max_sigma = max_sigma / 255 if max_sigma >= 1 else float(max_sigma)
        thetas = _theta_schedule(schedule, self.T)
        thetas_cumsum = torch.cumsum(thetas, dim=0) - thetas[0]
        dt = -1 / thetas_cumsum[-1] * math.log(eps)  # float32 0-d tensor
        self.thetas: torch.Tensor = thetas
        self.sigmas: torch.Tensor = torch.sqrt(self.max_sigma ** 2 * 2 * thetas)
        self.thetas_cumsum: torch.Tensor = thetas_cumsum
        self.sigma_bars: torch.Tensor = torch.sqrt(self.max_sigma ** 2 * (1 - torch.exp(-2 * thetas_cumsum * dt)))
        self._dt = dt
        self.dt: float = float(dt)

    # ------------------------------------------------------------------------------------------- scalars
    def _s(self, arr: torch.Tensor, t: int) -> torch.Tensor:
        if not 0 <= int(t) <= self.T:
            raise InputError(f"time step {t} is outside 0..{self.T}")
        return arr[int(t)]

    def timesteps(self) -> list[int]:
        """The reverse-time order: ``T, T-1, ..., 1``."""
        return list(range(self.T, 0, -1))

    # ------------------------------------------------------------------------------------------- states
    def start_state(self, mu: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``x_T = mu + max_sigma * z``."""
        return mu + z * self.max_sigma

    def mu_bar(self, x0: torch.Tensor, mu: torch.Tensor, t: int) -> torch.Tensor:
        return mu + (x0 - mu) * torch.exp(-self._s(self.thetas_cumsum, t) * self._dt)

    def x0_from_noise(self, x: torch.Tensor, eps: torch.Tensor, t: int, mu: torch.Tensor) -> torch.Tensor:
        """The clean state implied by the predicted noise ``eps`` at step ``t``."""
        a = torch.exp(self._s(self.thetas_cumsum, t) * self._dt)
        return (x - mu - self._s(self.sigma_bars, t) * eps) * a + mu

    def posterior_mean(self, x: torch.Tensor, x0: torch.Tensor, t: int, mu: torch.Tensor) -> torch.Tensor:
        a = torch.exp(-self._s(self.thetas, t) * self._dt)
        b = torch.exp(-self._s(self.thetas_cumsum, t) * self._dt)
        c = torch.exp(-self._s(self.thetas_cumsum, t - 1) * self._dt)
        term1 = a * (1 - c ** 2) / (1 - b ** 2)
        term2 = c * (1 - a ** 2) / (1 - b ** 2)
        return term1 * (x - mu) + term2 * (x0 - mu) + mu

    def posterior_std(self, t: int) -> torch.Tensor:
        a = torch.exp(-2 * self._s(self.thetas, t) * self._dt)
        b = torch.exp(-2 * self._s(self.thetas_cumsum, t) * self._dt)
        c = torch.exp(-2 * self._s(self.thetas_cumsum, t - 1) * self._dt)
        var = (1 - a) * (1 - c) / (1 - b)
        return (0.5 * torch.log(torch.clamp(var, min=1e-20 * self._dt))).exp() * self.max_sigma

    # ------------------------------------------------------------------------------------------- steps
    def posterior_step(self, x: torch.Tensor, eps: torch.Tensor, t: int, mu: torch.Tensor,
                       z: torch.Tensor | None) -> torch.Tensor:
        """One step of the optimal posterior sampler, ``x_t → x_{t-1}``. ``z=None`` returns the mean."""
        if int(t) < 1:
            raise InputError("posterior steps run for t = T..1")
        mean = self.posterior_mean(x, self.x0_from_noise(x, eps, t, mu), t, mu)
        return mean if z is None else mean + self.posterior_std(t) * z

    def sde_step(self, x: torch.Tensor, eps: torch.Tensor, t: int, mu: torch.Tensor,
                 z: torch.Tensor | None) -> torch.Tensor:
        """One Euler–Maruyama step of the reverse SDE. ``z=None`` drops the diffusion term."""
        theta, sigma = self._s(self.thetas, t), self._s(self.sigmas, t)
        score = -eps / self._s(self.sigma_bars, t)
        x = x - (theta * (mu - x) - sigma ** 2 * score) * self._dt
        if z is None:
            return x
        return x - sigma * (z * math.sqrt(self.dt))

    def step(self, sampler: str, x: torch.Tensor, eps: torch.Tensor, t: int, mu: torch.Tensor,
             z: torch.Tensor | None) -> torch.Tensor:
        if sampler == "posterior":
            return self.posterior_step(x, eps, t, mu, z)
        if sampler == "sde":
            return self.sde_step(x, eps, t, mu, z)
        raise InputError(f"unknown sampler {sampler!r}; choose 'posterior' or 'sde'")
