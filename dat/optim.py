"""DAT (Algorithm 1 of the paper) as an optimizer wrapper in the style of SAM implementations, plus
two baselines in the same family: SAM on the noise targets, and noise injection.

Each wrapper shares ``param_groups`` with a base optimizer (SGD by default), so learning-rate
schedulers act on the base optimizer unchanged. A step is:

    loss(w).backward()            # g = grad L(w)   (DAT and SAM need it, noise injection does not)
    opt.first_step(zero_grad=True)   # w <- w + e (e the method's perturbation of the targets)
    loss(w + e).backward()        # gradient at the perturbed point
    opt.second_step()             # w restored, base step from w with that gradient

``step(closure)`` does this with ``p`` perturbations averaged. Only the noise-target parameters
are perturbed; every other parameter stays at w. ``first_step`` reads the gradient of the targets
only, which lets the trainer compute it for the head alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch

from dat.noise.profile import DrawBank


class _PerturbedStep(torch.optim.Optimizer):
    """Common machinery: remember w, move the targets, restore w, base step."""

    needs_first_grad = True  # whether first_step uses the gradient at w

    def __init__(self, params: Iterable, base_optimizer: type[torch.optim.Optimizer] = torch.optim.SGD, *,
                 target_params: Mapping[str, torch.nn.Parameter], p: int = 1,
                 generator: torch.Generator | None = None, defaults: dict | None = None, **base_kwargs):
        if not isinstance(p, int) or isinstance(p, bool) or p < 1:
            raise ValueError(f"Invalid p: expected a positive int (perturbations per step), found {p!r}")
        if not target_params:
            raise ValueError("target_params is empty: expected a mapping of parameter name -> Parameter")
        params = list(params)
        super().__init__(params, dict(defaults or {}, p=p, **base_kwargs))
        self.base_optimizer = base_optimizer(self.param_groups, **base_kwargs)
        # Share the groups, so schedulers and load_state_dict act on one set of hyperparameters.
        self.param_groups = self.base_optimizer.param_groups
        self.defaults.update(self.base_optimizer.defaults)
        owned = {id(q) for group in self.param_groups for q in group["params"]}
        for name, q in target_params.items():
            if id(q) not in owned:
                raise ValueError(f"target parameter {name!r} is not among the optimized parameters")
        self.target_params = dict(target_params)
        self.generator = generator

    # -- hyperparameters live in the param groups (the base optimizer's, which schedulers and a
    # resume's load_state_dict act on), read at each use as SAM implementations read rho ----------
    def _target_groups(self) -> dict:
        """{target name: its param group}, as the groups are now."""
        group_of = {id(q): group for group in self.base_optimizer.param_groups for q in group["params"]}
        return {name: group_of[id(q)] for name, q in self.target_params.items()}

    def _hyper(self, key: str):
        """A hyperparameter that is one number for the whole step (p; alpha or rho in reports); the
        groups must agree on it."""
        values = {group[key] for group in self.base_optimizer.param_groups}
        if len(values) != 1:
            raise ValueError(f"expected one {key} in every param group, found {sorted(values)}")
        return values.pop()

    @property
    def p(self) -> int:
        """Perturbations averaged per step (Algorithm 1's p), from the param groups."""
        return self._hyper("p")

    # -- subclasses: the perturbation e_j of the targets, given g restricted to them ----------------
    def _perturbations(self, grads: dict[str, torch.Tensor], weights: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        raise NotImplementedError

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> None:
        """Remember w; draw the step's p perturbations; move the targets to w + e_1."""
        weights = {name: q.detach() for name, q in self.target_params.items()}
        grads = {}
        if self.needs_first_grad:
            for name, q in self.target_params.items():
                if q.grad is None:
                    raise RuntimeError(f"first_step needs the gradient at w of target {name!r}; call backward() first")
                grads[name] = q.grad.detach().clone()
        for name, q in self.target_params.items():
            self.state[q]["w"] = q.detach().clone()  # w, restored by second_step
        self._pending = self._perturbations(grads, weights)
        self._accumulated: dict[torch.nn.Parameter, torch.Tensor] | None = None
        self._count = 0
        self._move(self._pending[0])
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def _move(self, perturbation: dict[str, torch.Tensor]) -> None:
        for name, q in self.target_params.items():
            q.copy_(self.state[q]["w"] + perturbation[name])  # w + e_j

    @torch.no_grad()
    def next_perturbation(self, zero_grad: bool = True) -> None:
        """After the gradient at w + e_j: bank it and move the targets to w + e_{j+1}."""
        self._bank()
        self._move(self._pending[self._count])
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def _bank(self) -> None:
        grads = {q: (q.grad.detach().clone() if q.grad is not None else None)
                 for group in self.param_groups for q in group["params"]}
        if self._accumulated is None:
            self._accumulated = grads
        else:
            for q, grad in grads.items():
                if grad is not None:
                    prev = self._accumulated.get(q)
                    self._accumulated[q] = grad if prev is None else prev + grad
        self._count += 1

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False) -> None:
        """Restore w and take the base optimizer's step with the (averaged) perturbed gradient."""
        if self._count > 0:  # p > 1: average the p gradients (the last one is still in .grad)
            self._bank()
            for q, total in self._accumulated.items():
                if total is not None:
                    q.grad = total / self._count  # g_avg = (1/p) sum_j grad L(w + e_j)
        for q in self.target_params.values():
            q.copy_(self.state[q]["w"])  # back to w: the step is taken from the unperturbed weights
        self.base_optimizer.step()
        self._pending, self._accumulated, self._count = [], None, 0
        if zero_grad:
            self.zero_grad()

    def step(self, closure=None):
        """One full step; ``closure`` must zero nothing, compute the loss, call backward, return it."""
        if closure is None:
            raise ValueError(f"{type(self).__name__}.step needs a closure (it evaluates the loss several times)")
        closure = torch.enable_grad()(closure)
        if self.needs_first_grad:
            self.zero_grad()
            closure()
        self.first_step(zero_grad=True)
        loss = closure()
        for _ in range(self.p - 1):
            self.next_perturbation(zero_grad=True)
            closure()
        self.second_step()
        return loss

    def load_state_dict(self, state_dict) -> None:
        super().load_state_dict(state_dict)
        self.base_optimizer.param_groups = self.param_groups  # keep the link after loading


class _DeviceNoiseStep(_PerturbedStep):
    """Perturbations built from a device profile's draws: the targets, the sampler, and delta_j."""

    def __init__(self, params: Iterable, base_optimizer: type[torch.optim.Optimizer], *, targets, sampler,
                 target_params: Mapping[str, torch.nn.Parameter], **kwargs):
        names = [layer.name for layer in targets.layers]
        if sorted(names) != sorted(target_params):
            raise ValueError(f"target_params {sorted(target_params)} do not match the targets' layers {sorted(names)}")
        super().__init__(params, base_optimizer, target_params=target_params, **kwargs)
        self.targets, self.sampler = targets, sampler
        # Samplers whose draws are cheaper in batches (DAT-Full's eta = mu + L z) are read through a
        # draw bank: B draws in one GEMM, consumed over the next steps.
        bank_size = getattr(sampler, "bank_size", 1)
        self.draws = DrawBank(sampler, bank_size) if bank_size > 1 else sampler

    def draw_bank_state(self) -> dict:
        """Where the draw bank stands (see `DrawBank.state_dict`); {} when draws are not banked."""
        return self.draws.state_dict() if isinstance(self.draws, DrawBank) else {}

    def load_draw_bank_state(self, state: dict) -> None:
        """Continue a saved bank mid-way: it is drawn again from the optimizer's generator (whose
        state the bank sets) and the next draw is the one an uninterrupted run would take."""
        if not isinstance(self.draws, DrawBank):
            if state:
                raise ValueError("found a draw bank state, but this optimizer's sampler does not bank its draws")
            return
        if state:
            self.draws.load_state_dict(state, self.generator)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "draw_bank": self.draw_bank_state()}

    def load_state_dict(self, state_dict) -> None:
        state_dict = dict(state_dict)
        bank = state_dict.pop("draw_bank", {})
        super().load_state_dict(state_dict)
        self.load_draw_bank_state(bank)

    def _draw_deltas(self, weights: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """p draws eta_j as weight perturbations delta_j = w_scale * eta_j (per target layer)."""
        first = next(iter(weights.values()))
        etas = self.draws.sample(self.p, self.generator)  # eta_j = mu + A z_j, shape [p, n]
        if etas.shape != (self.p, self.targets.n):
            raise ValueError(f"sampler returned shape {tuple(etas.shape)}, expected {(self.p, self.targets.n)}")
        deltas = self.targets.eta_to_deltas(etas.to(dtype=first.dtype, device=first.device), weights)
        return [{name: d[j] for name, d in deltas.items()} for j in range(self.p)]


class DAT(_DeviceNoiseStep):
    """Device-Aware Training (Algorithm 1).

    For j = 1..p: eta_j ~ the device profile (``sampler``); delta_j = w_scale * eta_j as a weight
    perturbation of the targets (``targets.eta_to_deltas``); eps_j = (g . delta_j / ||delta_j||^2)
    delta_j, the projection of g (restricted to the targets) on the line through delta_j; the
    gradient is taken at w + alpha * eps_j. The p gradients are averaged and the base optimizer
    steps from w.
    """

    def __init__(self, params: Iterable, base_optimizer: type[torch.optim.Optimizer] = torch.optim.SGD, *,
                 targets, sampler, target_params: Mapping[str, torch.nn.Parameter], alpha: float,
                 p: int = 1, generator: torch.Generator | None = None, **base_kwargs):
        if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not alpha >= 0:
            raise ValueError(f"Invalid alpha: expected a non-negative number, found {alpha!r}")
        super().__init__(params, base_optimizer, targets=targets, sampler=sampler, target_params=target_params,
                         p=p, generator=generator, defaults={"alpha": float(alpha)}, **base_kwargs)

    @property
    def alpha(self) -> float:
        """The perturbation strength, from the param groups (where a scheduler may change it)."""
        return self._hyper("alpha")

    def _perturbations(self, grads, weights):
        dtype = next(iter(weights.values())).dtype
        groups = self._target_groups()
        out = []
        for delta in self._draw_deltas(weights):
            dot = sum((grads[name] * delta[name]).sum() for name in delta)  # g . delta_j
            norm2 = sum((delta[name] ** 2).sum() for name in delta)         # ||delta_j||^2
            # alpha * eps_j, alpha read from each target's param group (as SAM reads rho); a zero
            # draw has no direction: no perturbation.
            out.append({name: (groups[name]["alpha"] * dot / norm2 if norm2 > 0
                               else torch.zeros((), dtype=dtype)) * delta[name] for name in delta})
        return out


class SAM(_PerturbedStep):
    """Sharpness-aware minimisation restricted to the noise targets: e = rho g / ||g|| (isotropic,
    device-blind; the comparison that shows what the device's directions add)."""

    def __init__(self, params: Iterable, base_optimizer: type[torch.optim.Optimizer] = torch.optim.SGD, *,
                 target_params: Mapping[str, torch.nn.Parameter], rho: float = 0.05, **base_kwargs):
        if not isinstance(rho, (int, float)) or isinstance(rho, bool) or not rho >= 0:
            raise ValueError(f"Invalid rho: expected a non-negative number, found {rho!r}")
        super().__init__(params, base_optimizer, target_params=target_params, p=1,
                         defaults={"rho": float(rho)}, **base_kwargs)

    @property
    def rho(self) -> float:
        """The radius, from the param groups (where a scheduler may change it)."""
        return self._hyper("rho")

    def _perturbations(self, grads, weights):
        norm = torch.sqrt(sum((g ** 2).sum() for g in grads.values()))  # ||g|| over the targets
        groups = self._target_groups()                                   # rho from each target's group
        return [{name: groups[name]["rho"] / (norm + 1e-12) * g for name, g in grads.items()}]  # rho g / ||g||


class NoiseInjection(_DeviceNoiseStep):
    """Hardware-aware training by noise injection (as in IBM aihwkit): the gradient at w + delta with
    delta = w_scale * eta, eta drawn from the device profile, no projection and no first gradient."""

    needs_first_grad = False

    def __init__(self, params: Iterable, base_optimizer: type[torch.optim.Optimizer] = torch.optim.SGD, *,
                 targets, sampler, target_params: Mapping[str, torch.nn.Parameter], p: int = 1,
                 generator: torch.Generator | None = None, **base_kwargs):
        super().__init__(params, base_optimizer, targets=targets, sampler=sampler, target_params=target_params,
                         p=p, generator=generator, **base_kwargs)

    def _perturbations(self, grads, weights):
        return self._draw_deltas(weights)  # delta_j = w_scale * eta_j
