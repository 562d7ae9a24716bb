"""Distillation: the KD loss, the layer map, students from teachers of another vocabulary
or shape."""

import math

import pytest
import torch

from components.text.tokenizer import train_tokenizer
from tests.support.data import tiny_frame
from tests.support.params import shipped
from tests.support.shared import weighted_ce
from tests.support.tiny import tiny_bert, tiny_tokenizer


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return tiny_tokenizer(tmp_path_factory.mktemp("tok"))


def test_kd_loss_matches_a_hand_computation():

    from components.text.distill import kd_loss

    student = torch.tensor([[1.0, 0.0]])
    teacher = torch.tensor([[0.0, 2.0]])
    labels = torch.tensor([0])
    alpha, t = 0.3, 2.0

    def softmax(xs):
        exps = [math.exp(x) for x in xs]
        return [e / sum(exps) for e in exps]

    ce = -math.log(softmax([1.0, 0.0])[0])
    p_t, p_s = softmax([0.0, 1.0]), softmax([0.5, 0.0])
    kl = sum(pt * math.log(pt / ps) for pt, ps in zip(p_t, p_s))
    expected = alpha * ce + (1 - alpha) * t * t * kl
    assert kd_loss(student, teacher, labels, alpha, t).item() == pytest.approx(expected, rel=1e-6)


def test_layer_map_spreads_student_layers_over_the_teacher():
    from components.text.distill import layer_map

    assert layer_map(2, 4) == [(0, 0), (1, 2), (2, 4)]
    assert layer_map(1, 2) == [(0, 0), (1, 2)]


def test_a_student_learns_from_a_teacher_with_another_vocabulary(tokenizer, tmp_path):
    """The pretrained path: the teacher reads its own tokens of each text, the student
    Kiln's; logits transfer per text and mean hidden states through the projections."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from components.text.data import ClassificationData, label_map
    from components.text.distill import Distiller, KdLoss

    # A character-level teacher vocabulary: every text splits into other tokens than the student's.
    chars = sorted(set("".join(tiny_frame()["text"])))
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    backend.save(str(tmp_path / "chars.json"))
    theirs = PreTrainedTokenizerFast(
        tokenizer_file=str(tmp_path / "chars.json"), pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]"
    )
    frame = tiny_frame()
    labels = label_map(frame["label"])
    data = ClassificationData({"train": frame}, labels, tokenizer, 48, 8, 0, teacher_tokenizer=theirs)
    batch = next(iter(data.train_dataloader()))
    assert not torch.equal(batch["input_ids"][:, :5], batch["teacher_input_ids"][:, :5])
    assert batch["teacher_input_ids"].shape[0] == batch["input_ids"].shape[0] == 8

    teacher, student = (
        tiny_bert(len(vocab), 32, 2, labels=len(labels)),
        tiny_bert(len(tokenizer), 16, 1, labels=len(labels)),
    )
    kd = KdLoss(alpha=0.5, temperature=2.0, hidden_weight=1.0)
    module = Distiller(student.train(), teacher, kd, shipped("distill.optim"), {}, num_labels=len(labels))
    loss = module.training_step(batch, 0)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.projections.parameters())
    assert all(p.grad is None for p in module.teacher.parameters())  # the teacher stays frozen
    # The student's ids must never reach a teacher with another vocabulary (they index other rows).
    with pytest.raises(ValueError, match="teacher_input_ids"):
        module.training_step({k: v for k, v in batch.items() if not k.startswith("teacher_")}, 0)
    # Each model predicts every text from its own tokens (distill's check of a student above its teacher).
    from components.text.classifier import predict_labels

    assert len(predict_labels(teacher, data.train_dataloader(), "teacher_")[1]) == len(frame)
    assert len(predict_labels(student, data.train_dataloader())[1]) == len(frame)


def test_an_inherited_student_is_every_other_teacher_layer_reading_a_cut_vocabulary():
    import copy

    from transformers import BertConfig

    from components.text.classifier import MeanPoolClassifier
    from components.text.distill import inherited_student
    from components.text.tokenizer import cut_vocabulary, used_tokens

    frame = tiny_frame()
    tokenizer = train_tokenizer(frame["text"], shipped("tokenize", vocab_size=300, min_frequency=1))
    train = frame["text"].iloc[::3].tolist()
    keep = used_tokens(tokenizer, train)
    config = BertConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=3,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    teacher = MeanPoolClassifier(config).eval()
    student = inherited_student(teacher, keep).eval()
    assert (student.config.num_hidden_layers, student.config.hidden_size) == (2, 32)
    assert student.config.vocab_size == len(keep) < tokenizer.get_vocab_size()
    # The teacher without its layers 1 and 3, reading the same texts in the old ids.
    reference = copy.deepcopy(teacher)
    reference.bert.encoder.layer = torch.nn.ModuleList([reference.bert.encoder.layer[i] for i in (0, 2)])
    cut = cut_vocabulary(tokenizer, keep)
    with torch.no_grad():
        for text in train:
            new, old = cut.encode(text).ids, tokenizer.encode(text).ids
            assert [keep[i] for i in new] == old
            mask = torch.ones(1, len(new), dtype=torch.long)
            expected = reference(input_ids=torch.tensor([old]), attention_mask=mask).logits
            found = student(input_ids=torch.tensor([new]), attention_mask=mask).logits
            assert torch.allclose(found, expected, atol=1e-6)


def test_kd_loss_weights_only_its_hard_label_term():
    from components.text.distill import kd_loss

    student = torch.tensor([[1.0, 0.0, -1.0], [0.0, 2.0, 0.5], [0.3, 0.1, 0.0]])
    teacher = torch.tensor([[0.0, 2.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 3.0]])
    labels, weight, alpha, t = [0, 1, 2], [0.25, 1.0, 3.0], 0.3, 2.0
    soft = kd_loss(student, teacher, torch.tensor(labels), 0.0, t)
    found = kd_loss(student, teacher, torch.tensor(labels), alpha, t, torch.tensor(weight))
    assert found.item() == pytest.approx(alpha * weighted_ce(student, labels, weight) + (1 - alpha) * soft.item())
    # A text without a label (an unlabelled one of the transfer set) adds to the soft term
    # alone; a batch of those alone has no hard term at all.
    unlabeled = torch.tensor([-100, 1, -100])
    mixed = kd_loss(student, teacher, unlabeled, alpha, t, torch.tensor(weight))
    assert mixed.item() == pytest.approx(alpha * weighted_ce(student[1:2], [1], weight) + (1 - alpha) * soft.item())
    none = kd_loss(student, teacher, torch.full((3,), -100), alpha, t, torch.tensor(weight))
    assert none.item() == pytest.approx((1 - alpha) * soft.item())
