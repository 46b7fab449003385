"""A plain-PyTorch SimCLR training step, the reference for jssl's step time (cifar10 preset).

The same step as `configs/simclr.py:cifar10`: ResNet-18 with the CIFAR stem (3x3/1 conv, no
max-pool; zero-initialized last BN scale in each block, as jssl), projector
Linear(512, 2048, no bias)-BN-ReLU-Linear(2048, 256), NT-Xent at T = 0.2 over the 2N views
(both views in one forward pass, so BN statistics span them), and a LARS step as
`optax.lars`: `u = g + wd * w` (weights only), `u *= eta * ||w|| / ||u||` (weights only),
`m = momentum * m + lr * u`, `w -= m`. float32, optionally channels_last.
`arch='resnet50', stem='imagenet'` gives the `imagenet` preset's ResNet-50 (bottleneck blocks,
stride on the 3x3 conv, 7x7/2 stem + max-pool) with its 2048-2048-128 projector; `amp=True`
runs the forward in bfloat16 autocast (the GPU reference, with channels_last).

torch is a benchmark-only dependency: jssl never imports it. Run as a script it prints one
JSON line, with the process's peak RSS (`peak_rss_mb`): `python -m jssl.bench step
--torch_reference` runs it so, in a process of its own, to compare memory as well as time.

    python benchmarks/torch_reference.py --batch_size 256 --steps 3 --warmup 1
"""

import argparse
import json
import time

import torch
import torch.nn.functional as F
from torch import nn


class BasicBlock(nn.Module):
  """Two 3x3 convolutions with a residual connection (1x1 projection when the shape changes)."""

  def __init__(self, cin, cout, stride):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(cout)
    self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(cout)
    nn.init.zeros_(self.bn2.weight)
    self.proj = None
    if stride != 1 or cin != cout:
      self.proj = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

  def forward(self, x):
    y = F.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    return F.relu((x if self.proj is None else self.proj(x)) + y)


class Bottleneck(nn.Module):
  """1x1 reduce, 3x3 (strided), 1x1 expand (x4), with a residual connection."""

  def __init__(self, cin, width, stride):
    super().__init__()
    cout = 4 * width
    self.body = nn.Sequential(
        nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
        nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width),
        nn.ReLU(inplace=True), nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout))
    nn.init.zeros_(self.body[-1].weight)
    self.proj = None
    if stride != 1 or cin != cout:
      self.proj = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

  def forward(self, x):
    return F.relu((x if self.proj is None else self.proj(x)) + self.body(x))


STAGES = {'resnet18': (2, 2, 2, 2), 'resnet50': (3, 4, 6, 3)}


class ResNet18Cifar(nn.Module):
  """ResNet trunk (default ResNet-18 with the CIFAR stem), global average pool -> [N, F]."""

  def __init__(self, width=64, arch='resnet18', stem='cifar'):
    super().__init__()
    if stem == 'cifar':
      self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False),
                                nn.BatchNorm2d(width), nn.ReLU(inplace=True))
    else:
      self.stem = nn.Sequential(nn.Conv2d(3, width, 7, 2, 3, bias=False),
                                nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                                nn.MaxPool2d(3, 2, 1))
    blocks, cin = [], width
    for i, n in enumerate(STAGES[arch]):
      for j in range(n):
        stride = 2 if i > 0 and j == 0 else 1
        if arch == 'resnet18':
          blocks.append(BasicBlock(cin, width * 2**i, stride))
          cin = width * 2**i
        else:
          blocks.append(Bottleneck(cin, width * 2**i, stride))
          cin = 4 * width * 2**i
    self.blocks = nn.Sequential(*blocks)
    self.out_dim = cin

  def forward(self, x):
    return self.blocks(self.stem(x)).mean(dim=(2, 3))


class SimCLRNet(nn.Module):
  """Backbone + projector Linear-BN-ReLU-Linear."""

  def __init__(self, hidden=2048, proj_dim=256, arch='resnet18', stem='cifar'):
    super().__init__()
    self.backbone = ResNet18Cifar(arch=arch, stem=stem)
    layers, cin = [], self.backbone.out_dim
    for _ in range(1 if arch == 'resnet18' else 2):  # the imagenet preset: 2048-2048-128
      layers += [nn.Linear(cin, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True)]
      cin = hidden
    self.projector = nn.Sequential(*layers, nn.Linear(cin, proj_dim))

  def forward(self, x):
    return self.projector(self.backbone(x))


def nt_xent(z1, z2, temperature=0.2):
  """SimCLR's NT-Xent: `mean_i -log(exp(s_i,pos) / sum_{k != i} exp(s_ik))` over 2N views."""
  n = z1.shape[0]
  z = F.normalize(torch.cat([z1, z2]), dim=1, eps=1e-12)
  s = (z @ z.T) / temperature
  s = s.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float('-inf'))
  pos = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
  return F.cross_entropy(s, pos)


class LARS(torch.optim.Optimizer):
  """LARS as optax.lars; parameters of groups with `adapt=False` (biases, BN) skip decay/ratio."""

  def __init__(self, params, lr, momentum=0.9, weight_decay=1e-6, trust_coefficient=0.001):
    super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                                  trust_coefficient=trust_coefficient, adapt=True))

  @torch.no_grad()
  def step(self):
    for group in self.param_groups:
      for p in group['params']:
        if p.grad is None:
          continue
        u = p.grad
        if group['adapt']:
          u = u.add(p, alpha=group['weight_decay'])
          w_norm, u_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(u)
          ratio = torch.where((w_norm > 0) & (u_norm > 0),
                              group['trust_coefficient'] * w_norm / u_norm, torch.ones_like(w_norm))
          u = u * ratio
        state = self.state[p]
        if 'm' not in state:
          state['m'] = torch.zeros_like(p)
        m = state['m'].mul_(group['momentum']).add_(u, alpha=group['lr'])
        p.sub_(m)


def make_optimizer(model, lr):
  """LARS with weights adapted and decayed, biases and BN parameters plain momentum SGD."""
  adapt, plain = [], []
  for module in model.modules():
    for name, p in module.named_parameters(recurse=False):
      is_bn = isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d))
      (plain if is_bn or name == 'bias' else adapt).append(p)
  return LARS([{'params': adapt}, {'params': plain, 'adapt': False}], lr=lr)


def seconds_per_step(step, steps: int, warmup: int, device: str) -> tuple:
  """`(seconds per call, last loss)` of `step()` (which returns the loss tensor) over `steps`
  calls after `warmup` untimed ones; the clock stops once the device has finished."""
  for _ in range(warmup):
    step()
  if device == 'cuda':
    torch.cuda.synchronize()
  start = time.perf_counter()
  for _ in range(steps):
    loss = step()
  loss = float(loss.detach())  # waits for the device
  return (time.perf_counter() - start) / max(steps, 1), loss


def time_step(batch_size=256, image_size=32, steps=3, warmup=1, channels_last=False,
              seed=0, arch='resnet18', stem='cifar', amp=False) -> dict:
  """Mean wall time of one SimCLR training step on 2 x batch_size random views (CPU/GPU)."""
  torch.manual_seed(seed)
  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  model = SimCLRNet(proj_dim=256 if arch == 'resnet18' else 128, arch=arch, stem=stem).to(device)
  memory_format = torch.channels_last if channels_last else torch.contiguous_format
  model = model.to(memory_format=memory_format)
  opt = make_optimizer(model, lr=0.3 * batch_size / 256)
  views = torch.rand(2 * batch_size, 3, image_size, image_size, device=device)
  views = views.contiguous(memory_format=memory_format)

  def step():
    with torch.autocast(device, dtype=torch.bfloat16, enabled=amp):
      z = model(views)
    loss = nt_xent(z[:batch_size].float(), z[batch_size:].float(), temperature=0.2)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss

  model.train()
  step_s, loss = seconds_per_step(step, steps, warmup, device)
  return dict(step_ms=1000 * step_s, images_per_s=batch_size / step_s, loss=loss,
              batch_size=batch_size, image_size=image_size, steps=steps, warmup=warmup,
              channels_last=channels_last, arch=arch, amp=amp, device=device,
              torch_version=torch.__version__,
              threads=torch.get_num_threads())


def peak_rss_mb() -> float:
  """This process's peak resident memory in MB: Linux's VmHWM, which starts afresh at exec
  (getrusage's ru_maxrss would carry the launching process's peak over)."""
  with open('/proc/self/status', encoding='ascii') as status:
    return next(int(line.split()[1]) for line in status if line.startswith('VmHWM:')) / 1024


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--batch_size', type=int, default=256)
  parser.add_argument('--image_size', type=int, default=32)
  parser.add_argument('--steps', type=int, default=3)
  parser.add_argument('--warmup', type=int, default=1)
  parser.add_argument('--channels_last', action='store_true')
  parser.add_argument('--arch', default='resnet18', choices=sorted(STAGES))
  parser.add_argument('--stem', default='cifar', choices=('cifar', 'imagenet'))
  parser.add_argument('--amp', action='store_true')
  args = parser.parse_args()
  out = time_step(args.batch_size, args.image_size, args.steps, args.warmup, args.channels_last,
                  arch=args.arch, stem=args.stem, amp=args.amp)
  print(json.dumps({**out, 'peak_rss_mb': peak_rss_mb()}))


if __name__ == '__main__':
  main()
