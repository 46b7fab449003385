"""Rematerialization that every XLA backend honours: a block recomputed in the backward pass.

`remat_call(block, unbound, x, *args)` calls the Flax module `block` (a ResNet block with its
BatchNorm state, a ViT block) as `block(x, *args)` and keeps only `x` (and the variables) for
the backward pass, where it runs the block again and differentiates that run. `args` are not
differentiated: flags, masks, PRNG keys (a block's randomness must come in through them, so
that the recomputation draws the same). The recomputation starts from

  x_re = x + 0 * g[0]

(g the output cotangent): the same value, but it cannot run before the cotangent exists, nor be
merged with the forward pass. `flax.linen.remat` relies on optimization barriers for that, which
XLA:CPU drops: it then computes the recomputation with the forward pass and keeps everything
(measured in docs/benchmarks.md, "Memory"). Values and
gradients equal the plain block's; the updated BatchNorm statistics come from the forward run.
`unbound` is the same block unbound (`parent=None`), applied to the saved variables.
`block_call(remat, block_cls, args, name, x, *call_args)` builds the named block inside the
calling module and calls it, through `remat_call` when `remat`.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp


def _tie_to(x, g):
  """`x` unchanged in value, but computed from the first element of the cotangent `g`."""
  return x + jnp.zeros((), x.dtype) * jnp.ravel(g)[0].astype(x.dtype)


def remat_call(block: nn.Module, unbound: nn.Module, x, *args):
  """`block(x, *args)`, recomputed from `x` in the backward pass (module docstring)."""

  def run(mdl, x):
    return mdl(x, *args)

  def forward(mdl, x):
    return mdl(x, *args), (mdl.variables, x)

  def backward(residuals, g):
    variables, x = residuals
    state = [c for c in variables if c != 'params']  # e.g. batch_stats: updated, discarded

    def apply(params, x):
      out = unbound.apply({**variables, 'params': params}, x, *args, mutable=state or False)
      return out[0] if state else out

    _, vjp = jax.vjp(apply, variables['params'], _tie_to(x, g))
    d_params, dx = vjp(g)
    return {'params': d_params}, dx

  return nn.custom_vjp(run, forward_fn=forward, backward_fn=backward)(block, x)


def block_call(remat: bool, block_cls, args, name: str, x, *call_args):
  """`block_cls(*args, name=name)(x, *call_args)`, recomputed in the backward pass if `remat`.
  Call it inside a Flax module's compact method: the block becomes its submodule `name`."""
  block = block_cls(*args, name=name)
  if not remat:
    return block(x, *call_args)
  return remat_call(block, block_cls(*args, parent=None), x, *call_args)
