"""The public surface of `jssl.losses`: names, signatures, return structure, imports, docstrings.

The signatures below are those of docs/losses.md.
"""

import inspect
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from jssl import losses

REQUIRED = inspect.Parameter.empty

# name -> (positional parameters as (name, default), keyword-only parameters {name: default}).
SPEC = {
    'margin_loss': ([('x1', REQUIRED), ('x2', REQUIRED), ('y', REQUIRED)],
                    {'margin': 1.0, 'p': 2.0}),
    'triplet_loss': ([('anchor', REQUIRED), ('positive', REQUIRED), ('negative', REQUIRED)],
                     {'margin': 1.0, 'p': 2.0}),
    'info_nce': ([('query', REQUIRED), ('keys', REQUIRED), ('negatives', None)],
                 {'temperature': 0.1}),
    'nt_xent': ([('z1', REQUIRED), ('z2', REQUIRED)], {'temperature': 0.1}),
    'moco_loss': ([('query', REQUIRED), ('key', REQUIRED), ('queue', REQUIRED)],
                  {'temperature': 0.2}),
    'nearest_neighbors': ([('z', REQUIRED), ('support', REQUIRED)], {'k': 1}),
    'byol_loss': ([('p', REQUIRED), ('z', REQUIRED)], {}),
    'simsiam_loss': ([('p', REQUIRED), ('z', REQUIRED)], {}),
    'mean_shift_loss': ([('p', REQUIRED), ('z', REQUIRED), ('bank', REQUIRED)], {'k': 5}),
    'dino_loss': ([('student', REQUIRED), ('teacher', REQUIRED), ('center', REQUIRED)],
                  {'student_temp': 0.1, 'teacher_temp': 0.04}),
    'dino_center': ([('center', REQUIRED), ('teacher', REQUIRED)], {'momentum': 0.9}),
    'ibot_patch_loss': ([('student', REQUIRED), ('teacher', REQUIRED), ('mask', REQUIRED),
                         ('center', REQUIRED)], {'student_temp': 0.1, 'teacher_temp': 0.04}),
    'ibot_patch_center': ([('center', REQUIRED), ('teacher', REQUIRED), ('mask', None)],
                          {'momentum': 0.9}),
    'koleo_loss': ([('x', REQUIRED)], {'eps': 1e-8}),
    'sinkhorn_knopp_teacher': ([('teacher_logits', REQUIRED)],
                               {'teacher_temp': REQUIRED, 'n_iters': 3}),
    'ijepa_loss': ([('predicted', REQUIRED), ('target', REQUIRED), ('mask', REQUIRED)], {}),
    'vicreg_loss': ([('z1', REQUIRED), ('z2', REQUIRED)],
                    {'sim_coeff': 25.0, 'std_coeff': 25.0, 'cov_coeff': 1.0}),
    'barlow_twins_loss': ([('z1', REQUIRED), ('z2', REQUIRED)], {'lambd': 0.0051}),
    'sinkhorn': ([('scores', REQUIRED)], {'epsilon': 0.05, 'n_iters': 3}),
    'swav_loss': ([('scores', REQUIRED)],
                  {'temperature': 0.1, 'epsilon': 0.05, 'n_iters': 3, 'assign_crops': (0, 1)}),
    'patchify': ([('images', REQUIRED), ('patch', REQUIRED)], {}),
    'mae_loss': ([('pred', REQUIRED), ('target', REQUIRED), ('mask', REQUIRED)],
                 {'norm_pix_loss': True}),
    'simmim_loss': ([('pred', REQUIRED), ('target', REQUIRED), ('mask', REQUIRED)], {}),
    'beit_loss': ([('logits', REQUIRED), ('tokens', REQUIRED), ('mask', REQUIRED)], {}),
}
# docs/losses.md gives unpatchify as the inverse of patchify; it must exist and invert.
EXTRA_PUBLIC = ['unpatchify']
# Helpers (not losses): their docstrings must still state what they compute (a fragment of the
# definition in docs/losses.md) and for which method.
HELPERS = {
    'patchify': ('(py, px, c)', '[N, H, W, C] -> [N, (H/p)(W/p), p*p*C]'),
    'unpatchify': ('Inverse of `patchify`', '[N, H, W, C]'),
}
# A fragment of each loss's formula (docs/losses.md) its docstring must show, and the paper's
# author/year.
FORMULA = {
    'nearest_neighbors': ('the highest `cos(z_i, s)`', 'Dwibedi'),
    'dino_center': ('momentum * center + (1 - momentum) * mean', 'Caron'),
    'margin_loss': ('max(0, y_i (d_i - margin))', 'Hadsell'),
    'triplet_loss': ('max(0, ||a_i - p_i||_p - ||a_i - n_i||_p + margin)', 'Schroff'),
    'info_nce': ('log softmax', 'Oord'),
    'nt_xent': ('exp(s_i,pos)', 'Chen'),
    'moco_loss': ('softmax(logits_i)[0]', 'He'),
    'byol_loss': ('2 - 2 cos', 'Grill'),
    'simsiam_loss': ('cos(p_i, sg(z_i))', 'Chen'),
    'mean_shift_loss': ('NN_k', 'Koohpayegani'),
    'dino_loss': ('teacher_temp', 'Caron'),
    'ibot_patch_loss': ('max(sum_l mask[n, l], 1)', 'Zhou'),
    'ibot_patch_center': ('momentum * center + (1 - momentum) * mean', 'Zhou'),
    'koleo_loss': ('-mean_i log(d_i + eps)', 'Sablayrolles'),
    'sinkhorn_knopp_teacher': ('exp(teacher_logits / teacher_temp)^T', 'Oquab'),
    'ijepa_loss': ('sqrt(var_biased + 1e-6)', 'Assran'),
    'vicreg_loss': ('sqrt(var_unbiased + 1e-4)', 'Bardes'),
    'barlow_twins_loss': ('sqrt(var_biased + 1e-5)', 'Zbontar'),
    'sinkhorn': ('exp(scores / epsilon)^T', 'Caron'),
    'swav_loss': ('log_softmax', 'Caron'),
    'mae_loss': ('sqrt(var_unbiased + 1e-6)', 'He'),
    'simmim_loss': ('(sum(mask) + 1e-5)', 'Xie'),
    'beit_loss': ('log_softmax', 'Bao'),
}


def _squash(text):
  return re.sub(r'\s+', ' ', text)


@pytest.mark.parametrize('name', sorted(SPEC) + EXTRA_PUBLIC)
def test_exported(name):
  assert name in losses.__all__
  assert callable(getattr(losses, name))


@pytest.mark.parametrize('name', sorted(SPEC))
def test_signature_matches_spec(name):
  positional, keyword = SPEC[name]
  params = list(inspect.signature(getattr(losses, name)).parameters.values())
  kinds = inspect.Parameter
  assert not [p for p in params if p.kind in (kinds.VAR_POSITIONAL, kinds.VAR_KEYWORD)]
  pos = [p for p in params if p.kind in (kinds.POSITIONAL_ONLY, kinds.POSITIONAL_OR_KEYWORD)]
  assert [(p.name, p.default) for p in pos] == positional
  kw = {p.name: p for p in params if p.kind == kinds.KEYWORD_ONLY}
  for key, default in keyword.items():
    assert key in kw, f'{name} lacks keyword-only `{key}`'
    assert kw[key].default == default and type(kw[key].default) is type(default), (key, default)
  extra = [p.name for p in kw.values() if p.name not in keyword and p.default is REQUIRED]
  assert not extra, f'{name}: extra keyword arguments need defaults: {extra}'


def _abstract(*shape, dtype=jnp.float32):
  return jax.ShapeDtypeStruct(shape, dtype)


def test_return_structure():
  """Each loss returns a float32 scalar; only vicreg_loss returns (loss, aux). Traced, not run."""
  n, d, k = 6, 4, 5
  x, f32 = _abstract(n, d), jnp.float32
  scalars = {
      'margin_loss': (x, x, _abstract(n)), 'triplet_loss': (x, x, x), 'info_nce': (x, x),
      'nt_xent': (x, x), 'moco_loss': (x, x, _abstract(9, d)), 'byol_loss': (x, x),
      'simsiam_loss': (x, x), 'mean_shift_loss': (x, x, _abstract(9, d)),
      'dino_loss': (_abstract(3, n, k), _abstract(2, n, k), _abstract(k)),
      'barlow_twins_loss': (x, x), 'swav_loss': (_abstract(3, n, k),),
      'mae_loss': (_abstract(n, 4, 12), _abstract(n, 4, 12), _abstract(n, 4)),
      'simmim_loss': (_abstract(n, 4, 4, 3), _abstract(n, 4, 4, 3), _abstract(n, 4, 4)),
      'beit_loss': (_abstract(n, 4, k), _abstract(n, 4, dtype=jnp.int32), _abstract(n, 4)),
  }
  for name, args in scalars.items():
    out = jax.eval_shape(getattr(losses, name), *args)
    assert isinstance(out, jax.ShapeDtypeStruct), name
    assert (out.shape, out.dtype) == ((), f32), name
  # bf16 in, float32 out.
  out = jax.eval_shape(losses.nt_xent, _abstract(n, d, dtype=jnp.bfloat16),
                       _abstract(n, d, dtype=jnp.bfloat16))
  assert (out.shape, out.dtype) == ((), f32)
  loss, aux = jax.eval_shape(losses.vicreg_loss, x, x)
  assert (loss.shape, loss.dtype) == ((), f32)
  assert len(aux) == 3 and all(v.shape == () for v in aux.values())
  assert jax.eval_shape(losses.sinkhorn, _abstract(n, k)).shape == (n, k)
  assert jax.eval_shape(lambda a: losses.patchify(a, 2), _abstract(n, 4, 6, 3)).shape == (n, 6, 12)
  assert jax.eval_shape(lambda a: losses.unpatchify(a, 2, 4, 6),
                        _abstract(n, 6, 12)).shape == (n, 4, 6, 3)
  assert jax.eval_shape(losses.dino_center, _abstract(k), _abstract(2, n, k)).shape == (k,)
  nn1 = jax.eval_shape(losses.nearest_neighbors, x, _abstract(9, d))
  assert nn1.shape in ((n, d), (n, 1, d))
  nn3 = jax.eval_shape(lambda a, b: losses.nearest_neighbors(a, b, k=3), x, _abstract(9, d))
  assert nn3.shape == (n, 3, d)


def test_import_pulls_in_neither_tensorflow_nor_flax():
  code = ("import jssl.losses, sys; "
          "assert 'tensorflow' not in sys.modules, 'tensorflow imported'; "
          "assert 'flax' not in sys.modules, 'flax imported'; print('ok')")
  res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
  assert res.returncode == 0, res.stderr
  assert res.stdout.strip() == 'ok'


@pytest.mark.parametrize('name', sorted(FORMULA))
def test_loss_docstring_states_formula_and_paper(name):
  doc = inspect.getdoc(getattr(losses, name)) or ''
  assert len(doc) > 80, doc
  fragment, author = FORMULA[name]
  assert fragment in _squash(doc), f'{name} docstring lacks its formula ({fragment!r})'
  assert author in doc, f'{name} docstring does not cite {author}'
  assert re.search(r'\b(19|20)\d\d\b', doc), f'{name} docstring lacks the paper year'


@pytest.mark.parametrize('name', sorted(HELPERS))
def test_helper_docstring(name):
  doc = _squash(inspect.getdoc(getattr(losses, name)) or '')
  assert len(doc) > 60, doc
  for fragment in HELPERS[name]:
    assert fragment in doc, f'{name} docstring lacks {fragment!r}'
