"""PruningCallback prunes a tiny CNN while a Lightning Trainer fits it."""
import pytest

torch = pytest.importorskip('torch')
L = pytest.importorskip('lightning')

from torch import nn  # noqa: E402

from prunus.compression.torch import AGPPruner, Pruning, WeightPruningConfig  # noqa: E402
from prunus.integrations.lightning import PruningCallback  # noqa: E402


class Net(L.LightningModule):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                                  nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))

    def forward(self, x):
        return self.body(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


def _loader():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 1, 6, 6, generator=g)
    y = torch.randint(0, 3, (64,), generator=g)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)


class Spy(L.Callback):
    def __init__(self, layer):
        self.layer, self.seen = layer, []

    def on_train_epoch_end(self, trainer, pl_module):
        rows = self.layer.weight.detach().flatten(1)
        self.seen.append(int((rows.abs().sum(1) == 0).sum()))


def _fit(module, callbacks, epochs, **kw):
    trainer = L.Trainer(max_epochs=epochs, callbacks=callbacks, accelerator='cpu', logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, **kw)
    trainer.fit(module, _loader())
    return trainer


def test_agp_filter_pruning_grows_each_epoch():
    module = Net()
    conv = module.body[0]
    # NNI 1.x's span: the final sparsity is reached at the last update epoch before end_epoch,
    # so end_epoch=3 updates at epochs 0, 1, 2 and reaches 75% at epoch 2.
    pruner = AGPPruner(module, [{'final_sparsity': 0.75, 'start_epoch': 0, 'end_epoch': 3,
                                 'frequency': 1, 'op_names': ['body.0']}], pruning_algorithm='l1')
    spy = Spy(conv)
    _fit(module, [PruningCallback(pruner), spy], epochs=3)
    assert spy.seen[0] < spy.seen[1] < spy.seen[2] == 6  # 75% of 8 filters, whole filters


def test_training_api_counts_optimizer_steps_with_accumulation():
    module = Net()
    config = WeightPruningConfig(target_sparsity=0.5, pruning_type='magnitude', pattern='unstructured',
                                 start_step=0, end_step=3, pruning_frequency=1,
                                 pruning_op_types=['Conv2d'], pruning_scope='local')
    pruning = Pruning(config, module.body)  # bound to a submodule of the LightningModule
    trainer = _fit(module, [PruningCallback(pruning)], epochs=2, accumulate_grad_batches=2)
    # 2 epochs x 4 batches / 2 accumulated = 4 optimizer steps; Pruning.step is the caller's
    # step index (trainer.global_step at the batch start), so the last one is 3.
    assert trainer.global_step == 4 and pruning.step == 3
    for conv in (module.body[0], module.body[2]):
        assert float((conv.weight == 0).float().mean()) == pytest.approx(0.5, abs=0.02)
