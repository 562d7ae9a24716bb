"""The Lightning modules: class-weighted losses for macro-F1 on skewed labels, the MLM loss
on masked positions alone, and models that train in training mode while a distillation
teacher stays in eval mode."""

import numpy as np
import pytest
import torch

from components.text.modules import class_weights
from tests.support.params import shipped
from tests.support.shared import weighted_ce


def test_balanced_weights_are_scikit_learns_and_one_on_balanced_labels():
    from sklearn.utils.class_weight import compute_class_weight

    assert class_weights("balanced", [0, 1, 2] * 4, 3).tolist() == [1.0, 1.0, 1.0]
    skewed = [0] * 13 + [1] * 5 + [2] * 2
    weights = class_weights("balanced", skewed, 3)
    expected = compute_class_weight("balanced", classes=np.arange(3), y=np.array(skewed))
    assert weights.tolist() == pytest.approx(expected.tolist())
    assert weights[torch.tensor(skewed)].mean().item() == pytest.approx(1.0)  # 1 averaged over the rows
    assert class_weights("none", skewed, 3) is None


def test_a_label_absent_from_train_weighs_one_and_the_rest_are_balanced_among_themselves():
    weights = class_weights("balanced", [0, 0, 2], 3)
    assert weights.tolist() == pytest.approx([3 / (2 * 2), 1.0, 3 / (2 * 1)])
    assert torch.isfinite(weights).all()


def _model():
    from components.text.classifier import MeanPoolClassifier
    from components.text.model import bert_config

    torch.manual_seed(0)
    config = bert_config(
        shipped("encoder", layers=1, hidden=16, heads=2, intermediate=32, max_length=16, dropout=0.1),
        vocab_size=40,
        pad_token_id=0,
        num_labels=3,
    )
    return MeanPoolClassifier(config)


def _batch(labels: list[int]) -> dict:
    ids = torch.randint(5, 40, (len(labels), 16), generator=torch.Generator().manual_seed(1))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.tensor(labels)}


def test_the_classifier_trains_on_the_weighted_loss_and_reports_the_plain_one():
    from components.text.modules import Classifier

    labels, weight = [0, 0, 0, 1, 2, 0], [0.5, 2.0, 4.0]
    module = Classifier(_model().eval(), shipped("finetune.optim"), {}, 3, torch.tensor(weight))
    batch = _batch(labels)
    logits = module.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.detach()
    assert module.training_step(batch, 0).item() == pytest.approx(weighted_ce(logits, labels, weight), rel=1e-5)
    plain, _ = module.loss(batch)  # val/loss and test/loss
    assert plain.item() == pytest.approx(weighted_ce(logits, labels, [1.0, 1.0, 1.0]), rel=1e-5)


def _fit_and_record_modes(module, tmp_path) -> list[tuple[int, dict[str, bool]]]:
    """Fit `module` for three steps (validating after each) and record each module's
    training flag at the start of every step."""
    import lightning as L
    from torch.utils.data import DataLoader

    from components.text.training import build_trainer

    seen = []

    class Modes(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, index):
            seen.append((index, {name: m.training for name, m in pl_module.named_modules()}))

    batches = [_batch([0, 1, 2, 0]), _batch([1, 2, 0, 0])]
    loop = shipped("pretrain.loop", max_epochs=1, max_steps=3, val_every_steps=1, checkpoint_every=100, log_every=100)
    trainer = build_trainer("modes", shipped("hardware", accelerator="cpu", devices=1), loop, tmp_path, [])
    trainer.callbacks.append(Modes())
    trainer.fit(
        module,
        train_dataloaders=DataLoader([*batches, *batches], batch_size=None),
        val_dataloaders=DataLoader(batches, batch_size=None),
    )
    return seen


def test_a_model_loaded_in_eval_mode_trains_in_training_mode_beside_a_frozen_teacher(tmp_path):
    """As prune's recovery: the student comes from from_pretrained (eval mode) and has just
    been scored; the teacher too. Lightning 2 keeps the modes modules have at fit start."""
    from components.text.distill import Distiller, KdLoss

    student, teacher = _model().eval(), _model().eval()
    loss = KdLoss(alpha=0.5, temperature=2.0, hidden_weight=0.0)
    optim = shipped("distill.optim")
    module = Distiller(student, teacher, loss, optim, {}, 3, class_weights("balanced", [0, 0, 1, 2], 3))
    seen = _fit_and_record_modes(module, tmp_path)
    assert len(seen) == 3  # the second and third steps come after a validation
    for _, modes in seen:
        teachers = {name: training for name, training in modes.items() if name.startswith("teacher")}
        assert teachers and not any(teachers.values())  # dropout off in every teacher module
        rest = {name: training for name, training in modes.items() if not name.startswith("teacher")}
        assert all(rest.values()), sorted(name for name, training in rest.items() if not training)


def test_masked_only_loss_equals_the_full_loss():
    from transformers import BertForMaskedLM

    from components.text.model import bert_config
    from components.text.modules import masked_lm_loss

    torch.manual_seed(0)
    model = BertForMaskedLM(
        bert_config(
            shipped("encoder", layers=1, hidden=32, heads=2, intermediate=64, max_length=16, dropout=0.0), 100, 0
        )
    ).eval()
    ids = torch.randint(5, 100, (4, 16))
    labels = torch.where(torch.rand(4, 16) < 0.3, ids, torch.full_like(ids, -100))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    with torch.no_grad():
        full = model(**batch).loss.item()
        assert masked_lm_loss(model, batch).item() == pytest.approx(full, rel=1e-5)
        # The positions the masking collator gives pick the same tokens.
        masked = (labels.flatten() != -100).nonzero().squeeze(1)
        assert masked_lm_loss(model, batch | {"masked": masked}).item() == pytest.approx(full, rel=1e-5)
