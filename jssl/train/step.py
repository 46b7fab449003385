"""The train step: `make_train_step(method, tx, mesh, schedule, augment_fn)` -> jitted
`train_step(state, batch)`.

`train_step(state, batch) -> (new_state, metrics)` is pure: forward and loss
(`method.loss_fn`), gradients, the optax update, then `method.update_state` (EMA teachers...).
It is jitted with explicit shardings over `mesh`: the state replicated, every batch array
sharded on its first axis over 'data', outputs replicated, the old state donated. Plain means
over the global batch (BatchNorm statistics, contrastive negatives) span all devices; the same
code runs on 1 device and on many.

Non-finite guard: if the loss, the gradient norm or the new parameters' norm is not finite, the
step returns the old state unchanged and `metrics['finite'] = 0`; the loop stops on it, so a NaN
state is never written. Metrics: the method's (loss...), `grad_norm`, `param_norm`, `lr`,
`finite`, all replicated scalars.
"""

import jax
import jax.numpy as jnp
import optax

from jssl.train import sharding
from jssl.train.state import TrainState


def train_step_fn(method, tx, schedule=None, augment_fn=None):
  """The un-jitted step. `augment_fn(batch, rng) -> batch`, if given, runs first on the device
  (e.g. the photometric half of the view recipe, jssl.data.augment_jax.photometric_fn)."""

  def train_step(state: TrainState, batch: dict):
    rng = jax.random.fold_in(state.rng, state.step)
    if augment_fn is not None:
      rng, aug_rng = jax.random.split(rng)
      batch = augment_fn(batch, aug_rng)

    def loss_fn(params):
      return method.loss_fn(params, state.batch_stats, state.method_state, batch, rng, state.step)

    (loss, (batch_stats, method_state, metrics)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    params, method_state = method.update_state(state.params, params, method_state, state.step)
    grad_norm = optax.tree.norm(grads)
    param_norm = optax.tree.norm(params)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & jnp.isfinite(param_norm)
    new = TrainState(step=state.step + 1, params=params, batch_stats=batch_stats,
                     opt_state=opt_state, method_state=method_state, rng=state.rng)
    new = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, state)
    metrics = dict(metrics, loss=loss, grad_norm=grad_norm, param_norm=param_norm,
                   finite=finite.astype(jnp.float32))
    if schedule is not None:
      metrics['lr'] = schedule(state.step)
    return new, jax.tree.map(lambda m: jnp.asarray(m, jnp.float32), metrics)

  return train_step


def make_train_step(method, tx, mesh, schedule=None, augment_fn=None):
  """`train_step(state, batch) -> (state, metrics)`, jitted over `mesh` (state donated)."""
  repl, data = sharding.replicated(mesh), sharding.data_sharding(mesh)
  return jax.jit(train_step_fn(method, tx, schedule, augment_fn), in_shardings=(repl, data),
                 out_shardings=(repl, repl), donate_argnums=(0,))


def make_features_fn(method, mesh):
  """`features(params, batch_stats, images) -> [N, F]`, jitted: images sharded, output too."""
  repl, data = sharding.replicated(mesh), sharding.data_sharding(mesh)
  return jax.jit(method.features, in_shardings=(repl, repl, data), out_shardings=data)
