"""PruningCallback prunes a tiny BERT while transformers.Trainer trains it."""
import pytest

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')
pytest.importorskip('accelerate')

from prunus.compression.torch import AGPPruner, Pruning, WeightPruningConfig  # noqa: E402
from prunus.integrations.huggingface import PruningCallback  # noqa: E402


def _model():
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=32,
                                     max_position_embeddings=16, num_labels=2)
    return transformers.BertForSequenceClassification(config)


class _Data(torch.utils.data.Dataset):
    def __init__(self, n=48):
        g = torch.Generator().manual_seed(1)
        self.ids = torch.randint(0, 40, (n, 8), generator=g)
        self.labels = (self.ids[:, 0] > 20).long()

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {'input_ids': self.ids[i], 'labels': self.labels[i]}


def _linear_sparsity(model, names):
    modules = dict(model.named_modules())
    weights = [modules[n].weight for n in names]
    return float(sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights))


class _Spy(transformers.TrainerCallback):
    def __init__(self, model, names):
        self.model, self.names, self.seen, self.steps = model, names, [], 0

    def on_epoch_end(self, args, state, control, **kwargs):
        self.seen.append(_linear_sparsity(self.model, self.names))

    def on_step_end(self, args, state, control, **kwargs):
        self.steps += 1


def _train(model, callbacks, tmp_path, epochs=3):
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), num_train_epochs=epochs, per_device_train_batch_size=8,
        learning_rate=1e-3, report_to=[], save_strategy='no', logging_strategy='no',
        use_cpu=True, disable_tqdm=True)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=_Data(), callbacks=callbacks)
    trainer.train()
    return trainer


def test_agp_prunes_gradually_during_trainer_train(tmp_path):
    model = _model()
    targets = ['bert.encoder.layer.0.intermediate.dense', 'bert.encoder.layer.0.output.dense']
    # NNI 1.x's span: the final sparsity is reached at the last update epoch before end_epoch,
    # so end_epoch=3 updates at epochs 0, 1, 2 and reaches 0.75 at epoch 2.
    pruner = AGPPruner(model, [{'final_sparsity': 0.75, 'start_epoch': 0, 'end_epoch': 3,
                                'frequency': 1, 'op_names': targets}], pruning_algorithm='level')
    spy = _Spy(model, targets)
    _train(model, [PruningCallback(pruner), spy], tmp_path)
    assert spy.seen[0] < spy.seen[1] < spy.seen[2] == pytest.approx(0.75, abs=1e-3)
    masks = pruner.get_masks()
    for name in targets:  # masked weights stayed zero through AdamW
        weight = dict(model.named_modules())[name].weight
        assert not weight[masks[name]['weight'] == 0].any()


def test_training_api_steps_with_the_optimizer(tmp_path):
    model = _model()
    config = WeightPruningConfig(target_sparsity=0.5, pruning_type='magnitude', pattern='unstructured',
                                 start_step=1, end_step=10, pruning_frequency=3,
                                 pruning_op_types=['Linear'], excluded_op_names=['classifier'])
    pruning = Pruning(config)  # bound to the Trainer's model when training begins
    names = [n for n, m in model.named_modules()
             if isinstance(m, torch.nn.Linear) and n != 'classifier']
    spy = _Spy(model, names)
    trainer = _train(model, [PruningCallback(pruning), spy], tmp_path, epochs=3)
    # Pruning.step is the caller's step index (global_step at on_step_begin), 0..17 for the
    # 18 optimizer steps: one step per optimizer step, none counted twice.
    assert spy.steps == trainer.state.global_step == 18
    assert pruning.model is model and pruning.step == 17
    assert spy.seen[0] < spy.seen[-1] == pytest.approx(0.5, abs=0.01)


def test_rejects_other_objects_and_other_models(tmp_path):
    with pytest.raises(TypeError, match='needs an AGPPruner'):
        PruningCallback(object())
    pruner = AGPPruner(_model(), [{'final_sparsity': 0.5, 'op_types': ['Linear']}])
    with pytest.raises(ValueError, match='trains another model than the one the pruner is bound to'):
        _train(_model(), [PruningCallback(pruner)], tmp_path, epochs=1)


def test_one_trainer_callback_under_both_import_paths():
    from prunus.compression.torch.hf import PruningCallback as itrex_path
    assert itrex_path is PruningCallback
