"""ResNet-101 up to layer4 with frozen BatchNorm, as Query2Label's R101 backbone.

torchvision's network built without weights (nothing is downloaded); FrozenBatchNorm2d
(eps 1e-5) is the same fixed affine as the authors' copy. Keys: conv1, bn1, layer1..layer4.
"""
import torchvision
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.ops.misc import FrozenBatchNorm2d


class ResNetFeatures(IntermediateLayerGetter):
    """The last feature map (B, 2048, H/32, W/32); avgpool and fc dropped."""

    def __init__(self, name="resnet101", layers=None):
        if layers:  # fewer blocks per stage, same widths: a shallow network for tests
            net = torchvision.models.ResNet(torchvision.models.resnet.Bottleneck, list(layers),
                                            norm_layer=FrozenBatchNorm2d)
        else:
            net = getattr(torchvision.models, name)(weights=None, norm_layer=FrozenBatchNorm2d)
        super().__init__(net, return_layers={"layer4": "0"})
        self.num_channels = net.fc.in_features

    def forward(self, x):
        return super().forward(x)["0"]


def build_resnet101(layers=None):
    return ResNetFeatures("resnet101", layers)
