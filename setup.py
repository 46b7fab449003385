"""jssl: self-supervised visual representation learning in JAX/Flax."""

import pathlib

import setuptools

HERE = pathlib.Path(__file__).parent


def _requirements(name):
  lines = (HERE / name).read_text().splitlines()
  return [l.split('#')[0].strip() for l in lines if l.split('#')[0].strip()]


setuptools.setup(
    name='jssl',
    version='0.1.0',
    description='Self-supervised visual representation learning in JAX/Flax',
    long_description=(HERE / 'README.md').read_text(),
    long_description_content_type='text/markdown',
    python_requires='>=3.11',
    # configs/ (the top-level folder of the repository) is installed as jssl/configs, so that
    # `python -m jssl.main --config simclr:cifar10` works from a non-editable install too.
    packages=setuptools.find_packages(include=['jssl', 'jssl.*']) + ['jssl.configs'],
    package_dir={'jssl.configs': 'configs'},
    include_package_data=True,
    package_data={'jssl': ['data/embedded/*.npz']},
    install_requires=_requirements('requirements.txt'),
    # umap: the UMAP map of `python -m jssl.eval --pictures` (PCA is always drawn).
    extras_require={'dev': _requirements('requirements-dev.txt'), 'umap': ['umap-learn==0.5.12']},
)
