"""Real data: datasets as uint8 tensors with train/val/test splits, the image format, augmentation, and the
fingerprint of the train set a run directory's models were trained on."""

from gafi_opt.data.images import to_float, to_uint8
from gafi_opt.data.sources import RealData, load_data, stratified_subset

__all__ = ["RealData", "load_data", "stratified_subset", "to_float", "to_uint8"]
