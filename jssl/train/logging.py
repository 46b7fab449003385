"""Training logs: a plain-text progress line, metrics.jsonl, TensorBoard (clu) and curves.png.

- `Progress(total_steps, steps_per_epoch, batch_size)`: `line(step, metrics)` gives
  `step 120/3000 (epoch 3.1) loss 5.1234 lr 0.12 | 412 img/s | ETA 4m12s`, speed measured
  between successive calls.
- `MetricsLog(workdir, is_main)`: `write(step, metrics)` appends one JSON object per call to
  workdir/metrics.jsonl and, when clu's metric writers import (they need TensorBoard), writes
  scalars to TensorBoard event files in workdir; only on the main process.
- `plot_curves(workdir)`: workdir/curves.png with the loss, top-1 accuracy (kNN, or a
  fine-tuned classifier's) and the collapse
  diagnostics over steps, read back from metrics.jsonl (matplotlib, Agg backend).
Files go through etils.epath: local paths as before, gs:// paths through tf.io.gfile.
"""

import io
import json
import math
import time

import numpy as np
from etils import epath


def _fmt_time(seconds: float) -> str:
  if not math.isfinite(seconds):
    return '?'
  seconds = int(seconds)
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f'{h}h{m:02d}m' if h else f'{m}m{s:02d}s'


class Progress:
  """Formats progress lines; images/s and ETA from the wall time between calls."""

  def __init__(self, total_steps: int, steps_per_epoch: int, batch_size: int, start_step: int = 0):
    self.total, self.per_epoch, self.batch_size = total_steps, max(steps_per_epoch, 1), batch_size
    self._t, self._step = time.time(), start_step

  def restart_clock(self, step: int) -> None:
    """Excludes time spent outside training (evaluation, compilation) from the speed."""
    self._t, self._step = time.time(), step

  def line(self, step: int, metrics: dict) -> str:
    now = time.time()
    rate = (step - self._step) / max(now - self._t, 1e-9)
    self._t, self._step = now, step
    eta = (self.total - step) / rate if rate > 0 else float('inf')
    parts = [f'step {step}/{self.total} (epoch {step / self.per_epoch:.1f})']
    for key in ('loss', 'lr', 'knn_top1'):
      if key in metrics:
        parts.append(f'{key} {float(metrics[key]):.4g}')
    return ' '.join(parts) + f' | {rate * self.batch_size:.0f} img/s | ETA {_fmt_time(eta)}'


def _clu_writer(workdir: str):
  try:  # clu's writers import TensorBoard; without it, metrics.jsonl alone
    from clu import metric_writers  # pylint: disable=g-import-not-at-top
    return metric_writers.create_default_writer(workdir, just_logging=False, asynchronous=True)
  except Exception:  # noqa: BLE001 (ImportError, or a broken TF/TensorBoard install)
    return None


class MetricsLog:
  """Appends scalars to workdir/metrics.jsonl (and TensorBoard through clu when available)."""

  def __init__(self, workdir: str, is_main: bool = True, tensorboard: bool = True):
    self.is_main = is_main
    self.path = epath.Path(workdir, 'metrics.jsonl')
    self.writer = _clu_writer(workdir) if (is_main and tensorboard) else None

  def write(self, step: int, metrics: dict) -> None:
    if not self.is_main:
      return
    scalars = {k: float(np.asarray(v)) for k, v in metrics.items()}
    try:
      with self.path.open('a') as f:
        f.write(json.dumps({'step': int(step), **scalars}) + '\n')
    except OSError as e:
      from jssl.train import checkpoint  # pylint: disable=g-import-not-at-top
      raise checkpoint.WriteFailedError(f'writing {self.path} failed ({e})') from e
    if self.writer is not None:
      self.writer.write_scalars(int(step), scalars)

  def close(self) -> None:
    if self.writer is not None:
      self.writer.flush()
      self.writer.close()


def read_metrics(workdir: str) -> list:
  """The records of workdir/metrics.jsonl (a resumed run's rewritten steps: the last wins)."""
  path = epath.Path(workdir, 'metrics.jsonl')
  if not path.exists():
    return []
  with path.open() as f:
    return [json.loads(line) for line in f if line.strip()]


_PANELS = (('training loss', ('loss',)), ('top-1 accuracy', ('knn_top1', 'top1')),
           ('embedding std (L2-normalized; collapse: 0)', ('embedding_std',)),
           ('effective rank of the features', ('effective_rank',)),
           ('assignment entropy (nats)', ('teacher_entropy_of_mean', 'teacher_mean_entropy',
                                          'code_entropy_of_mean', 'code_mean_entropy')))


def plot_curves(workdir: str) -> str:
  """Writes workdir/curves.png (loss, kNN top-1 and, where logged, the collapse diagnostics of
  jssl.methods.collapse, against step); returns its path."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  records = read_metrics(workdir)
  panels = [(title, keys) for i, (title, keys) in enumerate(_PANELS)
            if i < 2 or any(k in r for r in records for k in keys)]
  fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.5), squeeze=False)
  for ax, (title, keys) in zip(axes[0], panels):
    for key in keys:
      points = {r['step']: r[key] for r in records if key in r}
      if points:
        steps = sorted(points)
        ax.plot(steps, [points[s] for s in steps], label=key,
                marker=None if key == 'loss' or len(steps) > 20 else '.')
    uniform = [r['entropy_uniform'] for r in records if 'entropy_uniform' in r]
    if 'entropy' in title and uniform:  # the entropy panel: ln K, the uniform distribution's
      ax.axhline(uniform[-1], color='0.5', linestyle='--', label='ln K (uniform)')
    if len(keys) > 1 and ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize='small')
    ax.set_xlabel('step')
    ax.set_title(title)
    ax.grid(alpha=0.3)
  fig.tight_layout()
  path = epath.Path(workdir, 'curves.png')
  buffer = io.BytesIO()
  fig.savefig(buffer, format='png', dpi=100)
  plt.close(fig)
  try:
    path.write_bytes(buffer.getvalue())
  except OSError as e:
    from jssl.train import checkpoint  # pylint: disable=g-import-not-at-top
    raise checkpoint.WriteFailedError(f'writing {path} failed ({e})') from e
  return str(path)
