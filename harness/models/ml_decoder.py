"""ML-Decoder (Ridnik et al., WACV 2023): TResNet feature map -> one cross-attention decoder layer
whose queries are fixed embeddings (one per group of labels) -> a group-wise linear layer.

Module paths reproduce the authors' state-dict keys: `body.*` (TResNet), `head.decoder.layers.0.*`,
`head.decoder.embed_standart`, `head.decoder.query_embed`, `head.decoder.duplicate_pooling(_bias)`.
"""
import torch
import torch.nn.functional as F
from torch import nn

from harness.models import register_model
from harness.models.backbones import tresnet

# The authors' --model-name -> the backbone it builds in their ML-Decoder repository.
BACKBONES = {"tresnet_m": tresnet.tresnet_m, "tresnet_l": tresnet.tresnet_l_v2, "tresnet_xl": tresnet.tresnet_xl_v2}


class DecoderLayer(nn.Module):
    """Their `TransformerDecoderLayerOptimal`: no self-attention; the query is added to itself
    (`tgt + dropout(tgt)`) and normalised before cross-attending to the image tokens."""

    def __init__(self, d_model, nhead=8, dim_feedforward=2048, dropout=0.1):
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.dropout1, self.dropout2, self.dropout3 = nn.Dropout(dropout), nn.Dropout(dropout), nn.Dropout(dropout)
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)

    def forward(self, tgt, memory):
        tgt = self.norm1(tgt + self.dropout1(tgt))
        tgt = self.norm2(tgt + self.dropout2(self.multihead_attn(tgt, memory, memory)[0]))
        tgt2 = self.linear2(self.dropout(F.relu(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout3(tgt2))


class Decoder(nn.Module):
    """Holds what the authors hang on their `nn.TransformerDecoder` (same names, same key order)."""

    def __init__(self, num_classes, num_groups, embedding, num_features):
        super().__init__()
        self.num_classes = num_classes
        self.duplicate_factor = int(num_classes / num_groups + 0.999)  # labels per group, as theirs
        self.duplicate_pooling = nn.Parameter(torch.empty(num_groups, embedding, self.duplicate_factor))
        self.duplicate_pooling_bias = nn.Parameter(torch.zeros(num_classes))
        self.layers = nn.ModuleList([DecoderLayer(embedding)])
        self.embed_standart = nn.Linear(num_features, embedding)
        self.query_embed = nn.Embedding(num_groups, embedding).requires_grad_(False)  # fixed queries
        nn.init.xavier_normal_(self.duplicate_pooling)


class MLDecoder(nn.Module):
    def __init__(self, num_classes, num_features, num_of_groups=-1, decoder_embedding=768):
        super().__init__()
        groups = 100 if num_of_groups < 0 else num_of_groups
        self.decoder = Decoder(num_classes, min(groups, num_classes), decoder_embedding, num_features)

    def forward(self, x):
        d = self.decoder
        tokens = F.relu(d.embed_standart(x.flatten(2).transpose(1, 2)))  # (B, HW, E)
        tgt = d.query_embed.weight.unsqueeze(1).expand(-1, x.shape[0], -1)  # (groups, B, E)
        h = d.layers[0](tgt, tokens.transpose(0, 1)).transpose(0, 1)  # (B, groups, E)
        # one small matmul per group, as their GroupFC (a batched product would round differently)
        out = torch.zeros(h.shape[0], h.shape[1], d.duplicate_factor, device=h.device, dtype=h.dtype)
        for i in range(h.shape[1]):
            out[:, i, :] = torch.matmul(h[:, i, :], d.duplicate_pooling[i, :, :])
        return out.flatten(1)[:, :d.num_classes] + d.duplicate_pooling_bias


class TResNetMLDecoder(nn.Module):
    def __init__(self, backbone, num_classes, num_of_groups=-1, decoder_embedding=768):
        super().__init__()
        self.body = backbone.body
        self.head = MLDecoder(num_classes, backbone.num_channels, num_of_groups, decoder_embedding)

    def forward(self, images):
        return self.head(self.body(images))


@register_model
def ml_decoder(model_name, num_classes, img_size, num_of_groups=-1, decoder_embedding=768, **sizes):
    """TResNet + ML-Decoder with random weights; `sizes` (layers, width_factor) only for tests.
    `img_size` is the evaluation resolution: the decoder attends to any number of tokens."""
    if model_name not in BACKBONES:
        raise ValueError(f"unknown ML-Decoder backbone '{model_name}' (known: {', '.join(BACKBONES)})")
    model = TResNetMLDecoder(BACKBONES[model_name](**sizes), num_classes, num_of_groups, decoder_embedding)
    model.img_size = img_size
    return model
