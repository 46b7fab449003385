"""Export a training run's backbone weights for use outside jssl.

    python -m jssl.export --workdir runs/simclr-tiny --out simclr.safetensors \
        [--format safetensors|msgpack] [--step N]

Reads the run's config.json and checkpoint (the latest, or `--step`) and writes the backbone
only (no projector, predictor, head or decoder; no teacher copy): MAE / SimMIM / BEiT's
`params['encoder']`, the joint-embedding methods' `params['backbone']` with
`batch_stats['backbone']` (the dVAE tokenizer: its encoder). 'safetensors' uses torchvision's
ResNet and timm's ViT names and layouts; 'msgpack' is jssl's own tree (see
`jssl.models.export`). Next to FILE goes FILE.json: the architecture (`config.model`), input
size, mean / std, method, step, format and key naming. `jssl.models.load_backbone(FILE)` reads
either back. Bad input is one `error:` line and exit status 2; the last stdout line is the
sidecar's summary as JSON.
"""

import json
import os
import sys

from absl import app, flags, logging

from jssl import config_files


def checkpoint_steps(workdir: str) -> list:
  """The steps of the complete checkpoints of a run folder (no orbax, nothing created)."""
  from etils import epath  # pylint: disable=g-import-not-at-top
  folder = epath.Path(workdir if '://' in workdir else os.path.abspath(workdir), 'checkpoints')
  if not folder.is_dir():
    return []
  return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


def check_run(workdir: str, step) -> None:
  """Raises FileNotFoundError naming `--workdir` / `--step` when there is nothing to read."""
  from jssl.train import runs  # pylint: disable=g-import-not-at-top
  runs.read_config(workdir)
  steps = checkpoint_steps(workdir)
  if not steps:
    raise FileNotFoundError(f'--workdir={workdir!r}: no checkpoint in its checkpoints/ folder '
                            '(train it first with python -m jssl.main)')
  if step is not None and step not in steps:
    raise FileNotFoundError(f'--step={step}: no checkpoint of that step in {workdir!r} '
                            f'(its steps: {steps})')


def backbone_variables(arrays: dict) -> dict:
  """`{'params', 'batch_stats'}` of the backbone in a run's restored `arrays`."""
  params, stats = arrays.get('params') or {}, arrays.get('batch_stats') or {}
  if 'encoder' in params:  # MAE / SimMIM / BEiT: the ViT; dVAE: its encoder
    return {'params': params['encoder'], 'batch_stats': {}}
  if 'backbone' in params:  # the joint-embedding methods (teachers live in method_state)
    return {'params': params['backbone'], 'batch_stats': stats.get('backbone') or {}}
  raise ValueError(f'no backbone in the checkpoint: its params hold {sorted(params)}, '
                   'expected "encoder" or "backbone"')


def eval_size(config) -> int:
  """The side of the images the run's features are computed on (its eval recipe's)."""
  data = config.data
  augment = data.get('eval_augment', None) or {}
  return int(augment.get('image_size', 0) or data.image_size)


def run_info(config, step: int) -> dict:
  """The sidecar's description of the run: method, step, architecture, input, mean / std."""
  from jssl.methods import base  # pylint: disable=g-import-not-at-top
  model = config.model.to_dict()
  data = config.data
  return {
      'method': config.method.name, 'step': int(step), 'architecture': model,
      'input_size': eval_size(config),
      'mean': list(model.get('mean', None) or base.CIFAR10_MEAN),
      'std': list(model.get('std', None) or base.CIFAR10_STD),
      'preprocess': dict(recipe=data.eval_recipe, **dict(data.get('eval_augment', None) or {})),
  }


def export(workdir: str, out: str, fmt: str = 'safetensors', step=None) -> dict:
  """Writes the backbone of the run in `workdir` to `out` (+ `out.json`); returns the sidecar."""
  from jssl.models import export as export_lib  # pylint: disable=g-import-not-at-top
  from jssl.train import runs  # pylint: disable=g-import-not-at-top
  if fmt not in export_lib.FORMATS:
    raise export_lib.ExportError(f'--format={fmt!r}: choose one of '
                                 f'{", ".join(export_lib.FORMATS)}')
  check_run(workdir, step)
  config = runs.read_config(workdir)
  arrays = runs.restore_arrays(workdir, step)
  variables = backbone_variables(arrays)
  info = dict(run_info(config, arrays['step']), workdir=workdir)
  module = export_lib.module_of(info['architecture'], 'mask_token' in variables['params'])
  folder = os.path.dirname(os.path.abspath(out))
  if not os.path.isdir(folder):
    raise FileNotFoundError(f'--out={out!r}: the folder {folder} does not exist')
  return export_lib.save(out, module, variables, info, fmt)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # orbax logs each restore at INFO
  f = flags.FLAGS
  try:
    sidecar = export(f.workdir, f.out, f.format, f.step)
  except (ValueError, OSError) as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  summary = {k: sidecar[k] for k in ('method', 'step', 'format', 'key_naming', 'input_size',
                                     'feature_dim')}
  print(json.dumps(dict(summary, out=f.out, sidecar=f.out + '.json')), flush=True)


def define_flags() -> None:
  flags.DEFINE_string('workdir', None, 'The training run folder (config.json, checkpoints/).')
  flags.DEFINE_string('out', None, 'The file to write (its sidecar: FILE.json).')
  flags.DEFINE_enum('format', 'safetensors', ['safetensors', 'msgpack'],
                    'safetensors: torchvision / timm names; msgpack: jssl\'s own tree.')
  flags.DEFINE_integer('step', None, 'Checkpoint step (default: the latest).')
  flags.mark_flags_as_required(['workdir', 'out'])


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=config_files.parse_flags)
