"""Units of the text model components: configs, windows, masking."""

import math
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from components.text.data import MaskedLMData, windows
from components.text.tokenizer import train_tokenizer
from tests.support.data import tiny_frame
from tests.support.params import shipped


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from components.text.data import load_tokenizer

    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    train_tokenizer(tiny_frame()["text"].tolist() * 3, shipped("tokenize", vocab_size=300)).save(str(path))
    return load_tokenizer(path, "test")


def test_heads_must_divide_hidden():
    with pytest.raises(ValidationError, match=r"heads \(3\) must divide hidden \(32\)"):
        shipped("encoder", hidden=32, heads=3)


def test_negative_learning_rate_is_refused():
    with pytest.raises(ValidationError, match="lr"):
        shipped("finetune.optim", lr=-1e-3)


def test_a_corrupt_tokenizer_file_is_named_with_what_to_rerun(tmp_path):
    from components.errors import KilnError
    from components.text.data import load_tokenizer

    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(KilnError, match=r"pretrain: tokenizer .*tokenizer.json is corrupt .*rerun the tokenize stage"):
        load_tokenizer(tmp_path / "tokenizer.json", "pretrain")


def test_windows_cover_the_whole_text(tokenizer):
    text = " ".join(f"word{i}" for i in range(200))
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    out = windows([text], tokenizer, 16)
    assert all(len(w) <= 16 and w[0] == tokenizer.cls_token_id and w[-1] == tokenizer.sep_token_id for w in out)
    assert [t for w in out for t in w[1:-1]] == ids


def test_masking_is_15_percent_with_80_10_10(tokenizer):
    texts = [" ".join(f"story{i % 7} about tech and business" for i in range(60))] * 40
    data = MaskedLMData(texts, texts[:2], tokenizer, 64, 4096, 0.15, seed=0, val_windows=1024)
    batch = data.collator(data.train_rows)
    original = tokenizer.pad(data.train_rows, return_tensors="pt")["input_ids"]
    chosen = batch["labels"] != -100
    special = torch.isin(original, torch.tensor(tokenizer.all_special_ids))
    assert not (chosen & special).any()
    share = chosen.sum().item() / (~special).sum().item()
    assert 0.14 < share < 0.16
    inputs = batch["input_ids"][chosen]
    masked = (inputs == tokenizer.mask_token_id).float().mean().item()
    kept = (inputs == original[chosen]).float().mean().item()
    assert 0.77 < masked < 0.83
    # Kept: the 10 % left as they were, plus random replacements that drew the same token.
    assert 0.08 < kept < 0.13
    assert (batch["labels"][chosen] == original[chosen]).all()


def test_val_masks_do_not_change_between_epochs(tokenizer):
    texts = tiny_frame()["text"].tolist()
    data = MaskedLMData(texts, texts, tokenizer, 32, 8, 0.15, seed=0, val_windows=1024)
    first = [b["input_ids"].clone() for b in data.val_dataloader()]
    second = [b["input_ids"] for b in data.val_dataloader()]
    assert all(torch.equal(a, b) for a, b in zip(first, second))


def test_a_val_check_scores_at_most_val_windows(tokenizer):
    texts = tiny_frame()["text"].tolist()
    every = windows(texts, tokenizer, 8)
    assert len(every) > 40

    def scored(cap: int) -> list[list[int]]:
        data = MaskedLMData(texts, texts, tokenizer, 8, 4, 0.15, seed=0, val_windows=cap)
        return [row.tolist() for batch in data.val_dataloader() for row in batch["labels"]]

    assert len(scored(len(every))) == len(every)  # under the cap: all of them
    assert len(scored(40)) == 40
    assert scored(40) == scored(40)  # the same sample at every check and run


def test_a_classifiers_val_check_scores_a_sample_keeping_label_shares_and_the_split_stays_whole(tokenizer):
    import pandas as pd

    from components.stats import stratified_sample
    from components.text.data import ClassificationData

    # 65 / 25 / 10 %, the skew the checks must keep: a check of 40 texts holds 26 / 10 / 4.
    labels = ["a"] * 130 + ["b"] * 50 + ["c"] * 20
    val = pd.DataFrame({"text": [f"text number {i}" for i in range(200)], "label": labels})
    data = ClassificationData({"val": val}, {"a": 0, "b": 1, "c": 2}, tokenizer, 16, 8, 0, val_texts=40)
    checked = [int(y) for batch in data.val_dataloader() for y in batch["labels"]]
    assert [checked.count(i) for i in range(3)] == [26, 10, 4]
    assert sum(len(batch["labels"]) for batch in data.loader("val")) == 200
    assert stratified_sample(labels, 40, 0) == stratified_sample(labels, 40, 0)  # the same at every check and run
    assert stratified_sample(labels, 40, 0) != stratified_sample(labels, 40, 1)
    assert stratified_sample(["a"] * 99 + ["rare"], 10, 0)[-1] == 99  # every label keeps one text
    whole = ClassificationData({"val": val}, {"a": 0, "b": 1, "c": 2}, tokenizer, 16, 8, 0, val_texts=200)
    assert sum(len(batch["labels"]) for batch in whole.val_dataloader()) == 200


def test_the_final_score_reads_val_predictions_off_its_own_pass(tokenizer):
    import lightning as L

    from components.text.classifier import predict_labels
    from components.text.data import ClassificationData
    from components.text.modules import Classifier
    from pipelines.stagekit.training import score

    frame = tiny_frame()
    names = sorted(set(frame["label"]))
    val = frame.iloc[::2].reset_index(drop=True)
    data = ClassificationData(
        {"val": val, "test": frame.iloc[1::2]}, {n: i for i, n in enumerate(names)}, tokenizer, 16, 8, 0, val_texts=10
    )
    model = _bert(len(tokenizer), 16, 1, 32, len(names))
    module = Classifier(model, shipped("finetune.optim"), {}, len(names))
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False)
    scored = score(trainer, module, data)
    # The whole split in its order (not the check's sample), as a second pass would predict it.
    assert (scored.truth, scored.predicted) == predict_labels(model, data.loader("val"))
    assert len(scored.truth) == len(val) > 10
    right = sum(t == p for t, p in zip(scored.truth, scored.predicted))
    assert scored.metrics["val/accuracy"] == pytest.approx(right / len(val))
    assert {"val/macro_f1", "test/macro_f1", "test/accuracy"} <= set(scored.metrics)


def test_kd_loss_matches_a_hand_computation():
    import math

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
        assert masked_lm_loss(model, batch).item() == pytest.approx(model(**batch).loss.item(), rel=1e-5)


def test_unigram_bias_starts_the_head_at_the_token_frequencies():
    from transformers import BertForMaskedLM

    from components.text.model import bert_config, unigram_bias, unigram_perplexity
    from components.text.modules import masked_lm_loss

    # A skewed stream: token 5 half the time, the rest spread over 95 others.
    g = torch.Generator().manual_seed(0)
    stream = torch.where(torch.rand(64, 32, generator=g) < 0.5, 5, torch.randint(6, 100, (64, 32), generator=g))
    rows = stream.tolist()
    bias = unigram_bias(rows, 100)
    assert bias.argmax().item() == 5 and abs(bias.mean().item()) < 1e-5
    torch.manual_seed(0)
    model = BertForMaskedLM(
        bert_config(
            shipped("encoder", layers=1, hidden=32, heads=2, intermediate=64, max_length=32, dropout=0.0), 100, 0
        )
    ).eval()
    labels = torch.where(torch.rand(64, 32, generator=g) < 0.15, stream, torch.full_like(stream, -100))
    batch = {"input_ids": stream, "attention_mask": torch.ones_like(stream), "labels": labels}
    with torch.no_grad():
        before = masked_lm_loss(model, batch).item()
        model.cls.predictions.decoder.bias.copy_(bias)
        after = masked_lm_loss(model, batch).item()
    # The stream's entropy is ~0.5 ln 2 + 0.5 (ln 2 + ln 95) = 2.97 nats; a zero bias gives ~ln 100.
    assert after < before - 1.0 and after == pytest.approx(2.97, abs=0.3)
    # What the frequencies alone score on the batch: the floor such a head starts from.
    assert math.log(unigram_perplexity(rows, 100, [batch])) == pytest.approx(2.97, abs=0.3)


def test_unigram_perplexity_scores_masked_tokens_by_train_frequency():
    from components.text.model import unigram_perplexity

    # Token 5 twice, 6 and 7 once in 4 tokens, add-one over 10: p(5) = 3/14, p(8) = 1/14.
    batch = {"input_ids": torch.zeros(1, 4, dtype=torch.long), "labels": torch.tensor([[5, -100, 8, -100]])}
    assert unigram_perplexity([[5, 5, 6, 7]], 10, [batch]) == pytest.approx(14 / math.sqrt(3))
    # Batches weigh by their rows, as Lightning's val/loss does.
    one = {"input_ids": torch.zeros(3, 4, dtype=torch.long), "labels": torch.tensor([[5] + [-100] * 3] * 3)}
    expected = math.exp((3 * -math.log(3 / 14) + -(math.log(3 / 14) + math.log(1 / 14)) / 2) / 4)
    assert unigram_perplexity([[5, 5, 6, 7]], 10, [one, batch]) == pytest.approx(expected)


def test_auto_precision_is_bf16_only_where_the_cpu_multiplies_bf16(monkeypatch):
    from components.text import training

    monkeypatch.setattr(training.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(training, "_cpu_flags", lambda: {"avx2", "avx512f", "avx512_bf16"})
    assert training.precision(shipped("hardware")) == "bf16-mixed"
    assert training.precision(shipped("hardware", precision="32-true")) == "32-true"  # a set precision wins
    monkeypatch.setattr(training, "_cpu_flags", lambda: {"avx2", "avx512f"})  # emulated bf16 is slower
    assert training.precision(shipped("hardware")) == "32-true"
    monkeypatch.setattr(training, "_cpu_flags", lambda: {"amx_bf16"})
    assert training.precision(shipped("hardware")) == "bf16-mixed"


def test_a_pretrained_teacher_gets_its_own_loop_and_small_data_enough_steps():
    from components.text.training import budgeted

    cfg = shipped("finetune")
    loop, optim = cfg.pretrained()
    assert (loop.max_epochs, loop.min_steps, loop.batch_size, optim.lr) == (1, 100, 16, 1e-4)
    assert budgeted(loop, 1734).max_epochs == 1  # BBC's train split: one epoch is 109 steps of 16
    assert budgeted(loop, 500).max_epochs == 4  # 32 steps an epoch: four make the 100 steps asked
    assert budgeted(loop, 10).max_epochs == 100  # one step an epoch
    assert cfg.loop.max_epochs == 2 and cfg.optim.lr == 1e-3  # an encoder trained here keeps its own
    assert budgeted(cfg.loop, 173).max_epochs == 17  # 6 steps of 32 an epoch: 2 epochs would be 12 steps
    capped = cfg.loop.model_copy(update={"max_steps": 50})
    assert budgeted(capped, 173).max_steps == 50  # max_steps still ends it
    assert budgeted(cfg.loop.model_copy(update={"min_steps": 0}), 173).max_epochs == 2  # epochs as given


def test_a_frozen_pretrained_teacher_trains_only_its_upper_layers_and_head():
    from components.text.classifier import MeanPoolClassifier, frozen
    from components.text.model import bert_config

    config = bert_config(shipped("encoder", layers=4, hidden=32, heads=2, intermediate=64, max_length=16), 50, 0)
    config.num_labels = 3
    model = MeanPoolClassifier(config)
    frozen(model, 3)
    trained = {
        name.split(".")[3] if name.startswith("bert.encoder") else name.split(".")[0]
        for name, p in model.named_parameters()
        if p.requires_grad
    }
    assert trained == {"3", "classifier"}  # the top layer and the classifier layer
    assert not any(p.requires_grad for p in model.bert.embeddings.parameters())
    frozen(unfrozen := MeanPoolClassifier(config), 0)
    assert all(p.requires_grad for p in unfrozen.parameters())


def test_steps_grow_as_a_power_of_the_rows_beyond_full_epochs_rows():
    from components.text.training import budgeted

    # prune's loop: no step limit, no min_steps, validation at each epoch's end.
    loop = shipped("prune.loop", max_epochs=2, batch_size=32, full_epochs_rows=4000, steps_growth=0.33)
    assert budgeted(loop, 4000) == loop  # up to the bound: every epoch, as configured
    full = 2 * 125  # two epochs of 4,000 rows
    ten, hundred = budgeted(loop, 40_000), budgeted(loop, 400_000)
    assert ten.max_steps == pytest.approx(full * 10**0.33, abs=1)  # growth 0.33: about a cube root
    assert hundred.max_steps == pytest.approx(full * 100**0.33, abs=1)  # not 100 times
    assert ten.val_every_steps == pytest.approx(ten.max_steps / 2, abs=1)  # as many checks as epochs
    root = loop.model_copy(update={"steps_growth": 0.5})
    assert budgeted(root, 400_000).max_steps == pytest.approx(full * 10, abs=1)
    every = loop.model_copy(update={"steps_growth": 1.0})  # 1: every epoch of every row
    assert budgeted(every, 40_000).max_steps == 2 * 1250
    assert budgeted(loop.model_copy(update={"max_steps": 300}), 400_000).max_steps == 300  # a set cap holds
    assert budgeted(loop.model_copy(update={"max_steps": 0}), 400_000).max_steps == 0  # 0: no training at all
    assert budgeted(loop.model_copy(update={"full_epochs_rows": None}), 400_000) == loop.model_copy(
        update={"full_epochs_rows": None}
    )


def test_a_fit_stops_at_its_wall_clock_budget(tmp_path):
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    from components.text.training import build_trainer

    class Line(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch, _):
            x, y = batch
            return torch.nn.functional.mse_loss(self.layer(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    data = DataLoader(TensorDataset(torch.randn(64, 4), torch.randn(64, 1)), batch_size=8)
    loop = shipped(
        "pretrain.loop",
        max_epochs=10**6,
        max_steps=10**7,
        val_every_steps=None,
        checkpoint_every=10**6,
        log_every=10**6,
        max_minutes=0.02,
    )
    trainer = build_trainer("budget", shipped("hardware", accelerator="cpu", devices=1), loop, tmp_path, [])
    trainer.fit(Line(), train_dataloaders=data)
    assert 0 < trainer.global_step < 10**7  # stopped by the clock after ~1 s, not by the steps


def _bert(vocab: int, hidden: int, layers: int, positions: int = 64, labels: int = 5):
    from transformers import BertConfig

    from components.text.classifier import MeanPoolClassifier

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=positions,
        num_labels=labels,
    )
    return MeanPoolClassifier(config).eval()


def test_a_cut_position_table_keeps_the_outputs_and_says_its_length(tmp_path):
    from components.text.classifier import MeanPoolClassifier
    from components.text.model import keep_positions

    model = _bert(50, 16, 1, positions=512)
    ids, mask = torch.randint(0, 50, (2, 20)), torch.ones(2, 20, dtype=torch.long)
    before = model(ids, mask).logits
    keep_positions(model, 24)
    assert model.config.max_position_embeddings == 24 and model.bert.embeddings.position_embeddings.num_embeddings == 24
    assert torch.equal(model(ids, mask).logits, before)
    model.save_pretrained(tmp_path)
    assert torch.equal(MeanPoolClassifier.from_pretrained(tmp_path).eval()(ids, mask).logits, before)


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

    teacher, student = _bert(len(vocab), 32, 2, labels=len(labels)), _bert(len(tokenizer), 16, 1, labels=len(labels))
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


def test_a_packaged_checkpoint_is_extracted_once_and_found_again_by_path(tmp_path, monkeypatch):
    from components.errors import KilnError
    from pipelines.stagekit import pretrained

    assert pretrained.resolve("prajjwal1/bert-tiny", tmp_path) == "prajjwal1/bert-tiny"  # not ours: a hub name
    found = Path(pretrained.resolve("all-MiniLM-L6-v2", tmp_path))
    assert found == tmp_path / ".kiln/models/all-MiniLM-L6-v2"
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in found.iterdir()}
    stamp = (found / "model.safetensors").stat().st_mtime_ns
    assert Path(pretrained.resolve("all-MiniLM-L6-v2", tmp_path)) == found
    assert (found / "model.safetensors").stat().st_mtime_ns == stamp  # not extracted twice

    monkeypatch.setitem(pretrained.PACKAGED, "missing", ("kiln_no_such_module", "model.zip", "no-such-model"))
    with pytest.raises(
        KilnError, match=r"pretrain.init 'missing' comes from the package no-such-model, .* pip install"
    ):
        pretrained.resolve("missing", tmp_path)
    assert not (tmp_path / ".kiln/models/missing").exists()


def test_a_stopped_fit_raises_keyboardinterrupt_not_lightnings_exit(tmp_path):
    """Lightning turns a KeyboardInterrupt in fit into sys.exit(1); `kiln stage` stopped
    by SIGTERM then ended with exit code 1 instead of "kiln: stopped" and 130."""
    import sqlite3

    import lightning as L
    from lightning.pytorch.loggers import Logger
    from torch.utils.data import DataLoader, TensorDataset

    from components.text.training import build_trainer

    class Stopped(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch, index):
            if index == 2:
                raise KeyboardInterrupt("terminated")
            return self.layer(batch[0]).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    class LockedStore(Logger):
        # What the MLflow logger's closing write meets when the stop landed inside its
        # previous SQLite write (CI saw it): the stop must not become that error.
        name, version = "locked", 0

        def log_metrics(self, metrics, step=None):
            pass

        def log_hyperparams(self, params):
            pass

        def finalize(self, status):
            raise sqlite3.OperationalError("database is locked")

    data = DataLoader(TensorDataset(torch.randn(64, 4)), batch_size=8)
    loop = shipped(
        "pretrain.loop", max_epochs=1, max_steps=-1, val_every_steps=None, checkpoint_every=10**6, log_every=10**6
    )
    hardware = shipped("hardware", accelerator="cpu", devices=1)
    for extra in ([], [LockedStore()]):
        trainer = build_trainer("stop", hardware, loop, tmp_path, extra)
        with pytest.raises(KeyboardInterrupt, match="terminated"):
            trainer.fit(Stopped(), train_dataloaders=data)


class _FirstId(torch.nn.Module):
    """A stand-in classifier whose prediction for a text is its first token id."""

    def forward(self, input_ids, attention_mask):
        from types import SimpleNamespace

        return SimpleNamespace(logits=torch.nn.functional.one_hot(input_ids[:, 0], 2).float())


def _batches(truth: list[int], student: list[int], teacher: list[int]) -> list[dict]:
    ids = lambda row: torch.tensor(row).unsqueeze(-1)  # noqa: E731 - one token a text
    return [
        {
            "input_ids": ids(student[i : i + 8]),
            "attention_mask": torch.ones(len(truth[i : i + 8]), 1),
            "teacher_input_ids": ids(teacher[i : i + 8]),
            "teacher_attention_mask": torch.ones(len(truth[i : i + 8]), 1),
            "labels": torch.tensor(truth[i : i + 8]),
        }
        for i in range(0, len(truth), 8)
    ]


def test_distill_says_why_when_the_student_scores_above_its_teacher():
    from components.text.classifier import predict_labels
    from pipelines.stages.distill import _above_teacher

    truth = [i % 2 for i in range(200)]
    wrong = lambda n: [1 - y if i < n else y for i, y in enumerate(truth)]  # noqa: E731 - the first n texts wrong
    batches = _batches(truth, truth, wrong(50))
    # The teacher reads its own tokens when the batch has them, the common ones when not.
    assert predict_labels(_FirstId(), batches, "teacher_") == (truth, wrong(50))
    assert predict_labels(_FirstId(), [{k: v for k, v in b.items() if "teacher" not in k} for b in batches]) == (
        truth,
        truth,
    )

    def said(student: list[int], teacher: list[int]) -> list[str]:
        return _above_teacher(truth, student, teacher, {"val/macro_f1": 0.0})

    (line,) = said(truth, wrong(50))  # 25 % of the texts: far beyond the noise of 200
    assert "above its teacher's" in line and "under-trained" in line and "200 val texts" in line
    (line,) = said(truth, wrong(2))  # 2 texts in 200: inside it
    assert "within the noise" in line
    assert said(wrong(2), truth) == [] and said(truth, truth) == []  # a teacher at least as good: nothing to say


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
