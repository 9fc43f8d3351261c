"""The memory-mapped store of training targets (train/logit_store.py): rows keep an index, a batch reads its rows'
targets back exactly (float16 log-probs), at 6 bytes per kept logit on disk."""

from __future__ import annotations

import numpy as np
import pytest

from distilflow.train.distill_trainer import (
    TARGET_ROW,
    TOPK_IDS,
    TOPK_LOGPROBS,
    UNMATCHED,
)
from distilflow.train.logit_store import TargetStore, write_store
from distilflow.train.sparse_targets import SparseTargetCollator


class _Pad:
    """Right-padding of input_ids/labels, as TRL's collator does (the part under test is the targets)."""

    def __call__(self, examples):
        import torch

        length = max(len(e["input_ids"]) for e in examples)
        ids = torch.tensor([e["input_ids"] + [0] * (length - len(e["input_ids"])) for e in examples])
        labels = torch.tensor([e["labels"] + [-100] * (length - len(e["labels"])) for e in examples])
        return {"input_ids": ids, "labels": labels}


def _rows():
    with_rest = {"input_ids": [1, 2, 3, 4], "labels": [-100, -100, 3, 4], "teacher_offset": 2,
                 TOPK_IDS: [[3, 7, -1], [4, 9, 11]], TOPK_LOGPROBS: [[-0.1, -2.5, 0.0], [-0.2, -1.0, -3.0]],
                 UNMATCHED: [[0.05, 0.01], [0.0, 0.0]]}
    without = {"input_ids": [5, 6], "labels": [-100, 6], "teacher_offset": 0, TOPK_IDS: [], TOPK_LOGPROBS: []}
    plain = {"input_ids": [1, 8, 9], "labels": [-100, 8, 9], "teacher_offset": 1, TOPK_IDS: [[8], [9]],
             TOPK_LOGPROBS: [[-0.3], [-0.4]], UNMATCHED: []}
    return [with_rest, without], [plain]


def test_rows_keep_an_index_and_a_batch_reads_back_its_targets(tmp_path):
    train, validation = _rows()
    inline = SparseTargetCollator(_Pad())([dict(r) for r in train + validation])
    store = write_store(tmp_path / "targets", [train, validation])
    assert [r[TARGET_ROW] for r in train + validation] == [0, -1, 1]
    assert all(TOPK_IDS not in r and UNMATCHED not in r for r in train + validation)  # moved out of the rows
    streamed = SparseTargetCollator(_Pad(), TargetStore(tmp_path / "targets"))(train + validation)
    assert streamed[TOPK_IDS].tolist() == inline[TOPK_IDS].tolist()
    assert streamed[TOPK_LOGPROBS].numpy() == pytest.approx(inline[TOPK_LOGPROBS].numpy(), abs=2e-3)
    assert streamed[UNMATCHED].numpy() == pytest.approx(inline[UNMATCHED].numpy(), abs=1e-4)
    assert streamed[TOPK_IDS][0, 2].tolist() == [3, 7, -1] and (streamed[TOPK_IDS][1] == -1).all()
    assert store.bytes_per_kept_logit() == 6.0
    assert isinstance(store.records, np.memmap)  # read from disk page by page, not loaded whole
