"""A conv net small enough for any test, sensitive to every input bit."""
import torch


class TinyConvNet(torch.nn.Module):
    """A conv over the normalised pixels, pooled to pool x pool: any bit of difference in the input
    shows in its scores."""

    def __init__(self, num_classes=80, width=4, pool=4):
        super().__init__()
        self.pool = pool
        self.conv = torch.nn.Conv2d(3, width, 3, stride=2)
        self.fc = torch.nn.Linear(width * pool * pool, num_classes)

    def forward(self, x):
        return self.fc(torch.nn.functional.adaptive_avg_pool2d(torch.relu(self.conv(x)), self.pool).flatten(1))
