"""A tiny config for the input benchmark test: synthetic 32 px images, SimCLR's CIFAR recipe.

Preset 'tiny' leaves the photometric ops to the device (cheap to trace, for the fast test);
'host' keeps the whole recipe on the host.
"""

import ml_collections

from jssl.data import config as data_config_lib


def get_config(preset: str = 'tiny') -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict({'batch_size': 8, 'seed': 0})
  config.data = data_config_lib.data_config()
  config.data.source = 'synthetic'
  config.data.synthetic.update(image_size=32, num_examples=64, num_classes=4)
  config.data.on_device_photometric = preset == 'tiny'
  return config
