"""Run by tests/test_distributed.py under torchrun: float64 data-parallel DAT steps against the same
steps taken on the whole batch in one process (the obviously right reference), on every rank."""

import copy
import sys

import torch

from dat.models import build_model
from dat.optim import DAT
from dat.parallel import GradientSync, init_from_env, local_slice, shutdown
from dat.noise.targets import find_targets
from dat.train import head_step, two_pass_step


class GaussianSampler:
    """eta = mu + A z with a fixed A, float64."""

    def __init__(self, n, k=3):
        g = torch.Generator().manual_seed(0)
        self.mu = 0.01 * torch.randn(n, generator=g, dtype=torch.float64)
        self.A = 0.05 * torch.randn(n, k, generator=g, dtype=torch.float64)

    def sample(self, num, generator):
        return self.mu + torch.randn(num, self.A.shape[1], generator=generator, dtype=torch.float64) @ self.A.T


ALPHA, P = 50.0, 2


def dat_optimizer(model, targets):
    params = dict(model.named_parameters())
    return DAT(model.parameters(), torch.optim.SGD, targets=targets, sampler=GaussianSampler(targets.n),
               target_params={l.name: params[l.name] for l in targets.layers}, alpha=ALPHA, p=P,
               generator=torch.Generator().manual_seed(1), lr=0.1, momentum=0.9, weight_decay=1e-3)


def main(choice: str) -> None:
    rank, world = init_from_env()
    torch.manual_seed(0)
    model = build_model("cnn6", False, 1, 8, 10, width=4, hidden=16).double()
    ref = copy.deepcopy(model)
    targets = find_targets(model, choice)
    opt, ref_opt = dat_optimizer(model, targets), dat_optimizer(ref, targets)
    step = head_step if choice == "last-linear" else two_pass_step
    sync = GradientSync(model)
    data = torch.Generator().manual_seed(2)
    for _ in range(3):
        x = torch.randn(13, 1, 8, 8, generator=data, dtype=torch.float64)  # 13: unequal slices
        y = torch.randint(0, 10, (13,), generator=data)
        step(ref, ref_opt, x, y)                       # the whole batch, one process
        xs, ys, n = local_slice(x, y)
        sync.set_batch(len(ys), n)
        step(model, opt, xs, ys, sync=sync)            # this rank's slice, gradients averaged
    worst = max(float((a - b).detach().abs().max()) for a, b in zip(model.parameters(), ref.parameters()))
    shutdown()
    print(f"rank {rank} of {world}: largest difference {worst:.3e}")
    if worst > 1e-10:
        sys.exit(f"rank {rank}: data-parallel steps differ from the whole-batch steps by {worst:.3e}")


if __name__ == "__main__":
    main(sys.argv[1])
