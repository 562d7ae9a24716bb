"""The distill adapter: what it says of a student that scores above its teacher."""

import torch


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
