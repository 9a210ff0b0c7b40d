"""lowres: dedicated low-resolution Inception-v3 networks for object-detection crops.

Szegedy et al., "Rethinking the Inception Architecture for Computer Vision" (CVPR 2016), section 9 and
Table 2: keep the trunk, change only the stem, and a 79x79 input costs what a 299x299 one does.
"""
from .models import STEMS, StemSpec, build_model

__version__ = "0.1.0"
__all__ = ["build_model", "STEMS", "StemSpec", "__version__"]
