"""Progress in items (lm-eval documents) as requests are answered, for a caller's progress bar.

lm-eval asks one request per document for generation and one per choice for multiple choice. Within one
``loglikelihood`` or ``generate_until`` call every request therefore counts as the call's documents divided by
its requests, so a call whose requests are all answered adds exactly its documents. Under conditions evaluated
together a request computed for N conditions is N answers, counted when they are computed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from fractions import Fraction


class ItemProgress:
    """Calls ``callback(n)`` each time answered requests complete ``n`` more whole items."""

    def __init__(self, callback: Callable[[int], None]) -> None:
        self.callback = callback
        self._share: Fraction | None = None  # items per request of the call being answered
        self._owed = Fraction(0)

    @contextmanager
    def call(self, requests: Sequence) -> Iterator[None]:
        """Answers counted inside belong to these lm-eval ``Instance`` requests (one call of the harness)."""
        items = len({(request.task_name, request.doc_id) for request in requests})
        self._share = Fraction(items, len(requests)) if requests else None
        try:
            yield
        finally:
            self._share = None

    def answered(self, requests: int) -> None:
        """``requests`` more requests of the current call are answered (for one condition each)."""
        if self._share is None:
            return
        self._owed += requests * self._share
        whole = math.floor(self._owed)
        if whole:
            self._owed -= whole
            self.callback(whole)


class AnsweredHook:
    """lm-eval's cache hook, which HFLM calls once per answered request, also reporting each answer."""

    def __init__(self, inner, answered: Callable[[], None]) -> None:
        self.inner = inner
        self.answered = answered

    def add_partial(self, attr: str, req, res) -> None:
        self.inner.add_partial(attr, req, res)
        self.answered()
