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
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "keras>=3.15,<3.16",
        "tensorboard>=2.21,<2.22",  # TF 2.21 no longer pulls it in; Keras' callback needs it
        "tensorflow-datasets>=4.9.9,<5",
        "absl-py>=2.1,<3",
        "numpy>=1.26,<3",
        "scipy>=1.11,<2",  # resample_poly for exact rational resampling
        "soundfile>=0.12,<0.15",
    ],
    extras_require={
        "test": ["pytest>=8,<10", "hypothesis>=6.100,<7", "matplotlib>=3.8,<4"],
        "study": ["matplotlib>=3.8,<4"],  # experiments/ablation.py: the report's bar charts
        "eval": ["sed_eval>=0.2.1,<0.3", "dcase_util>=0.2.20,<0.3"],
        "tflite": ["ai-edge-litert>=2.0,<3"],
    },
    entry_points={"console_scripts": ["msss-tf=msss_tf.cli:entry_point"]},
)
