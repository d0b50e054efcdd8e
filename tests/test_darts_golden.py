"""Golden sizes of the published DARTS-space evaluation networks.

The integers below were obtained independently of this library: a clean-room
PyTorch (2.13, CPU) re-implementation of the DARTS evaluation networks
(NetworkCIFAR / NetworkImageNet with the DARTS `operations.py` modules:
ReLUConvBN, SepConv, DilConv, FactorizedReduce, pools with
count_include_pad=False; stem multiplier 3 on CIFAR, three stride-2 stems on
ImageNet; reductions at layers // 3 and 2 * layers // 3), written from the
DARTS paper and code structure (not from the UNAS release), with the genotypes
typed from the DARTS paper and docs/ALGORITHM.md section 8.1. Parameters were counted
as DARTS's `utils.count_parameters_in_MB` does (every parameter outside the
auxiliary head, BN scale/offset included); multiply-adds with forward hooks
on every Conv2d and Linear at batch 1. DARTS_V2 gives 3,349,342, the number
the DARTS code reports. Published: DARTS_V2 3.3M, UNAS_CIFAR10 3.3M,
UNAS_CIFAR100 4.1M, UNAS_IMAGENET 5.1M (C = 46, < 600M multiply-adds).
"""

import keras
import numpy as np
import pytest

from unas_keras.networks.darts import build_darts_model
from unas_keras.space import presets

# name: (init_channels, num_cells, num_classes, side,
#        trainable parameters without the auxiliary head, with it)
GOLDEN = {
    "darts_v2": (36, 20, 10, 32, 3_349_342, 3_825_768),
    "darts_v1": (36, 20, 10, 32, 3_169_414, 3_645_840),
    "unas_cifar10": (36, 20, 10, 32, 3_330_766, 3_807_192),
    "unas_cifar100": (36, 20, 100, 32, 4_067_200, 4_612_836),
    "unas_imagenet": (46, 14, 1000, 224, 5_073_949, 6_330_629),
}
# Multiply-adds of unas_imagenet (convolutions + classifier, no auxiliary head) from the PyTorch count.
UNAS_IMAGENET_MACS = 548_602_256


def _trainable(model, skip_auxiliary=False):
    return sum(int(np.prod(v.shape)) for layer in model.layers
               if not (skip_auxiliary and layer.name.startswith("auxiliary"))
               for v in layer.trainable_weights)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_published_parameter_counts(name):
    channels, cells, classes, side, expected, expected_with_aux = GOLDEN[name]
    model = build_darts_model(presets.get(name), classes, (side, side, 3), init_channels=channels,
                              num_cells=cells, auxiliary=True)
    assert _trainable(model, skip_auxiliary=True) == expected
    assert _trainable(model) == expected_with_aux
    if name == "unas_imagenet":
        _check_mobile_multiply_adds(keras.Model(model.inputs, model.outputs[0]))


def _check_mobile_multiply_adds(model):
    profile = pytest.importorskip("unas_keras.profile")
    macs = profile.count_macs(model)
    assert macs < 600_000_000  # the mobile setting of the paper
    # count_macs reads the TensorFlow graph, where a dilated convolution on an odd-sided (7x7) map runs
    # on a map padded to 8x8 (SpaceToBatchND): 5 such dil_conv_3x3 add 124,200 (0.02%) to the PyTorch
    # count. Accept that much.
    assert UNAS_IMAGENET_MACS <= macs <= UNAS_IMAGENET_MACS + 124_200
