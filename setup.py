"""Packaging for unas_keras."""
from setuptools import find_packages, setup

setup(
    name="unas_keras",
    version="0.1.0",
    description="UNAS neural architecture search for Keras 3 / TensorFlow",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["unas_keras", "unas_keras.*"]),
    python_requires=">=3.10",
    install_requires=[
        "tensorflow>=2.16,<2.23",
        # 3.8: Model.export(input_signature=...) (latency.tflite, method="saved_model"); tested with
        # 3.8.0 and 3.15.1 (tests/test_optimizers.py, test_darts_layers.py, test_objectives.py, test_app_train.py).
        "keras>=3.8,<4",
        "keras-tuner>=1.4.7,<1.5",
        "tensorflow-datasets>=4.9.4,<5",
        "absl-py>=1.0",
        "ai-edge-litert>=1.2",
        "scikit-learn>=1.3",
        "scipy>=1.10",
        "matplotlib>=3.7",
        "numpy>=1.24",
        "psutil>=5.9",
        "tensorboard>=2.16",
    ],
    extras_require={"test": ["pytest>=7", "pytest-timeout>=2.1", "pytest-xdist>=3.5", "hypothesis>=6.80", "pyyaml>=6"]},
    include_package_data=True,
)
