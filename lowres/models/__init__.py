"""The model: one Inception-v3 trunk, three stems (paper section 9), a width multiplier, BN-auxiliary head."""
from .compile import compile_model
from .inception import LowResInception, build_model
from .stems import STEMS, StemSpec, get_stem, grid_sizes, min_input_size
from .weights import LoadReport, load_inception_v3_weights, read_state_dict

__all__ = [
    "LowResInception", "build_model", "STEMS", "StemSpec", "get_stem", "grid_sizes", "min_input_size",
    "LoadReport", "load_inception_v3_weights", "read_state_dict", "compile_model",
]
