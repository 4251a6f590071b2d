"""The ASL authors' TResNet-L classifier (Ridnik et al., ICCV 2021): TResNet-L, global average
pool, one linear layer. Keys as in their COCO checkpoint: body.*, head.fc.*."""
from harness.models import register_model
from harness.models.backbones.tresnet import tresnet_l


@register_model
def asl_tresnet_l(num_classes, img_size=448):
    """`img_size` is the evaluation resolution; the network itself accepts any multiple of 32."""
    model = tresnet_l(num_classes=num_classes)
    model.img_size = img_size
    return model
