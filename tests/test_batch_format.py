"""Channels-last batches for image passes: chosen per module, never a change of results'
meaning or of a module's state."""

import numpy as np
import pytest
import torch
from torch import nn

from graftsearch.training._imagetrain import (BatchFormat, input_format, logits_on_images,
                                              train_epoch)


class Viewing(nn.Module):
    """A network whose ``.view`` of a 4-D activation fails on channels-last tensors."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 8 * 8, 2)

    def forward(self, x):
        x = self.bn(self.conv(x))
        return self.fc(x.view(x.size(0), -1))


class Pooling(Viewing):
    def forward(self, x):
        return self.fc(self.bn(self.conv(x)).flatten(1))


def _loader(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 8, 8, generator=g)
    y = torch.randint(0, 2, (n,), generator=g)
    return [(x[:4], y[:4], None), (x[4:], y[4:], None)]


def test_a_module_that_views_activations_gets_contiguous_batches():
    x = torch.randn(2, 3, 8, 8)
    viewing = Viewing()
    with pytest.raises(RuntimeError, match="view"):
        viewing(x.contiguous(memory_format=torch.channels_last))
    assert input_format(viewing, x) == torch.contiguous_format
    assert input_format(Pooling(), x) == torch.channels_last
    assert input_format(Pooling(), torch.randn(2, 5)) == torch.contiguous_format


def test_viewing_modules_train_and_predict_as_on_contiguous_batches():
    torch.manual_seed(0)
    module = Viewing()
    opt = torch.optim.SGD(module.parameters(), lr=0.1)
    stats = train_epoch(module, _loader(), opt, torch.device("cpu"))
    assert np.isfinite(stats["train_loss"])
    z, y = logits_on_images(module, _loader(seed=1), torch.device("cpu"))
    assert z.shape == (8, 2) and y.shape == (8,)


def test_the_probe_keeps_every_submodule_mode_and_the_batch_norm_statistics():
    module = Pooling().train()
    module.bn.eval()  # a frozen batch-norm layer, as fine-tuning keeps them
    before = module.bn.running_mean.clone(), int(module.bn.num_batches_tracked)
    fmt = BatchFormat(module)
    out = fmt(torch.randn(4, 3, 8, 8))
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert module.training and not module.bn.training and module.conv.training
    assert torch.equal(module.bn.running_mean, before[0])
    assert int(module.bn.num_batches_tracked) == before[1]


def test_inference_runs_each_batch_once_and_matches_contiguous_logits():
    module = Pooling().eval()
    calls = []
    module.conv.register_forward_hook(lambda m, i, o: calls.append(len(o)))
    z, _ = logits_on_images(module, _loader(), torch.device("cpu"))
    assert calls == [4, 4]
    x = torch.cat([b[0] for b in _loader()])
    with torch.no_grad():
        np.testing.assert_allclose(z, module(x).numpy(), rtol=1e-5, atol=1e-6)
