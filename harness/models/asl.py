"""The ASL authors' TResNet classifiers (Ridnik et al., ICCV 2021): TResNet-M, -L or -XL, global
average pool, one linear layer. Keys as in their COCO checkpoints: body.*, head.fc.*."""
from harness.models import register_model
from harness.models.backbones import tresnet


def _asl(build, num_classes, img_size, **sizes):
    """`img_size` is the evaluation resolution; the network itself accepts any multiple of 32."""
    model = build(num_classes=num_classes, **sizes)
    model.img_size = img_size
    return model


@register_model
def asl_tresnet_m(num_classes, img_size=224, **sizes):
    return _asl(tresnet.tresnet_m, num_classes, img_size, **sizes)


@register_model
def asl_tresnet_l(num_classes, img_size=448, **sizes):
    return _asl(tresnet.tresnet_l, num_classes, img_size, **sizes)


@register_model
def asl_tresnet_xl(num_classes, img_size=640, **sizes):
    return _asl(tresnet.tresnet_xl, num_classes, img_size, **sizes)
