"""jssl.train.logging: metrics.jsonl, TensorBoard event files, curves.png, the progress line."""

import json
import os

from jssl.train import logging as logging_lib


def test_metrics_log_writes_jsonl_and_tensorboard_events(tmp_path):
  log = logging_lib.MetricsLog(str(tmp_path), is_main=True, tensorboard=True)
  assert log.writer is not None, 'clu/TensorBoard writer unavailable: is tensorboard installed?'
  log.write(10, {'loss': 2.5, 'lr': 0.1})
  log.write(20, {'loss': 2.0, 'knn_top1': 0.3})
  log.close()
  records = [json.loads(line) for line in open(tmp_path / 'metrics.jsonl')]
  assert records == [{'step': 10, 'loss': 2.5, 'lr': 0.1},
                     {'step': 20, 'loss': 2.0, 'knn_top1': 0.3}]
  events = [f for f in os.listdir(tmp_path) if f.startswith('events.out.tfevents')]
  assert events and os.path.getsize(tmp_path / events[0]) > 0
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  acc = event_accumulator.EventAccumulator(str(tmp_path))
  acc.Reload()
  tags = acc.Tags()
  scalars = {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in tags.get('scalars', [])}
  if not scalars:  # TF2 summaries are stored as tensors
    import numpy as np  # pylint: disable=g-import-not-at-top
    from tensorboard.util import tensor_util  # pylint: disable=g-import-not-at-top
    scalars = {t: [(e.step, float(np.asarray(tensor_util.make_ndarray(e.tensor_proto))))
                   for e in acc.Tensors(t)] for t in tags.get('tensors', [])}
  assert scalars['loss'] == [(10, 2.5), (20, 2.0)]


def test_metrics_log_off_the_main_process_writes_nothing(tmp_path):
  log = logging_lib.MetricsLog(str(tmp_path), is_main=False, tensorboard=True)
  log.write(1, {'loss': 1.0})
  log.close()
  assert os.listdir(tmp_path) == []


def test_plot_curves_and_progress_line(tmp_path):
  log = logging_lib.MetricsLog(str(tmp_path), tensorboard=False)
  for step in range(1, 4):
    log.write(step * 10, {'loss': 3.0 / step})
  log.write(30, {'knn_top1': 0.4})
  path = logging_lib.plot_curves(str(tmp_path))
  with open(path, 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  progress = logging_lib.Progress(total_steps=100, steps_per_epoch=10, batch_size=32)
  line = progress.line(50, {'loss': 1.23456, 'lr': 0.5})
  assert line.startswith('step 50/100 (epoch 5.0) loss 1.235 lr 0.5 | ') and 'ETA' in line
