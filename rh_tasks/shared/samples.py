"""The per-sample fields that tasks write into their documents and the report reads back.

lm-eval logs every document beside its scores, so a document is the only channel from a task to the report.
Documents stay plain dicts (lm-eval hashes them), but the fields the report depends on are named here, once:
tasks write them under these names, and :class:`SampleFields` reads them.
"""

from __future__ import annotations

from dataclasses import dataclass

LENGTH = "length"  # context length in the evaluated model's tokens (long-context tasks)
DEPTH = "depth"  # where the answer sits in the context, in percent
ARTICLE_ID = "article_id"  # items from one source article share a context (extractive_qa)
CONTEXT_ID = "context_id"  # items sharing a needle and haystack, or a gold paragraph, share a context
CLUSTER_FIELDS = (ARTICLE_ID, CONTEXT_ID)  # the first present one is the item's cluster: the unit of the tests
ANSWER = "answer"  # the reference answer of a single-answer task
ANSWERS = "answers"  # all reference answers of a multi-answer task


@dataclass(frozen=True)
class SampleFields:
    """What the report needs of one logged document; every field is optional."""

    cluster: str | None
    length: float | None
    depth: float | None
    answers: tuple[str, ...]

    @property
    def long_context(self) -> bool:
        """A long-context item: its answer sits at a known depth of a context of known length."""
        return self.length is not None and self.depth is not None

    @classmethod
    def read(cls, doc) -> SampleFields:
        doc = doc if isinstance(doc, dict) else {}
        cluster = next((str(doc[k]) for k in CLUSTER_FIELDS if doc.get(k) is not None), None)
        answers = doc.get(ANSWERS) if isinstance(doc.get(ANSWERS), list) else [doc.get(ANSWER)]
        return cls(
            cluster=cluster,
            length=_number(doc.get(LENGTH)),
            depth=_number(doc.get(DEPTH)),
            answers=tuple(a for a in answers if isinstance(a, str) and a.strip()),
        )


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
