from setuptools import find_packages, setup

setup(
    name="msss-tf",
    version="0.1.0",
    description=(
        "Self-supervised audio representations with multiple sampling strategies "
        "(ICASSP 2022) in Keras 3 / TensorFlow"
    ),
    python_requires=">=3.10,<3.13",
    packages=find_packages(include=["msss_tf", "msss_tf.*"]),
    # The shipped pre-trained encoder (msss_tf.embedding.shipped).
    package_data={"msss_tf": ["checkpoints/*.keras", "checkpoints/*.json"]},
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "keras>=3.15,<3.16",
        "tensorboard>=2.21,<2.22",  # TF 2.21 no longer pulls it in; Keras' callback needs it
        "tensorflow-datasets>=4.9.9,<5",
        "absl-py>=2.1,<3",
        "numpy>=1.26,<3",
        "scipy>=1.11,<2",  # resample_poly for exact rational resampling
        "soundfile>=0.12,<0.15",
        # Every documented job runs from `pip install -e .`: the event probes score with
        # sed_eval (DCASE 2016 task 2's metric), export and bench run the TFLite files.
        "sed_eval>=0.2.1,<0.3",
        "dcase_util>=0.2.20,<0.3",
        "ai-edge-litert>=2.0,<3",
        "matplotlib>=3.8,<4",  # the study's plots (dcase_util needs it too)
    ],
    extras_require={
        # jax: the cross-backend tests train the same model with KERAS_BACKEND=jax on CPU.
        "test": ["pytest>=8,<10", "pytest-xdist>=3.6,<4", "hypothesis>=6.100,<7",
                 "jax[cpu]>=0.10.2,<0.11"],
        # Training on the JAX backend (GPU hosts install their own jax build).
        "jax": ["jax>=0.10.2,<0.13"],
        # Kept so that older install lines keep working; their packages are now required.
        "study": [],
        "eval": [],
        "tflite": [],
        "corpus": ["espeakng-loader>=0.2.4,<0.3", "pretty-midi>=0.2.10,<0.3"],  # and: pip install --no-deps "tinysoundfont>=0.3.6,<0.4" (docs/corpus.md)
    },
    entry_points={"console_scripts": ["msss-tf=msss_tf.cli:entry_point"]},
)
