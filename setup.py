"""Packaging for lowres (the model, training, benchmark, second stage) and detection_bridge (boxes to crops)."""
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = "0.1.0"

setup(
    name="lowres",
    version=VERSION,
    description=(
        "Low-resolution Inception-v3 (Szegedy et al. 2016, section 9 / Table 2) for classifying "
        "object-detection crops, with a COCO box-to-crop bridge"
    ),
    long_description=(HERE / "README.md").read_text(encoding="utf-8") if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # configs/ is a package only so that the YAML presets ship with the code and are found by name.
    packages=find_packages(include=["lowres", "lowres.*", "detection_bridge", "detection_bridge.*", "configs"]),
    package_data={"configs": ["*.yaml"]},
    include_package_data=True,
    install_requires=[
        "torch>=2.1,<3",
        "torchvision>=0.16,<1",
        "albumentations>=1.4,<3",
        "pycocotools>=2.0.6,<3",
        "numpy>=1.24,<3",
        "pillow>=9.5",
        "click>=8.1,<9",
        "pyyaml>=6.0,<7",
        "tqdm>=4.64,<5",
    ],
    extras_require={
        "dev": ["pytest>=7.4", "hypothesis>=6.80", "onnx>=1.15", "onnxruntime>=1.17", "onnxscript>=0.1", "matplotlib>=3.7"],
        "report": ["matplotlib>=3.7"],
        "tensorboard": ["tensorboard>=2.14"],  # optional: training scalars also as TensorBoard events (RUN_DIR/tb)
    },
    entry_points={"console_scripts": ["lowres = lowres.cli:main"]},
)
