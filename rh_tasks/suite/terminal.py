"""What ``rh-eval suite`` shows while it evaluates: one progress bar, log lines above it, lm-eval's repeats once.

lm-eval logs a few INFO lines per task and condition, and some warnings once per task (for MMLU's 57 subjects,
57 times per build); it also draws a bar per task and per request batch. Under the suite's own bar that is
thousands of lines saying nothing new. Every change here is undone when the context exits.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from contextlib import contextmanager

from tqdm.contrib.logging import logging_redirect_tqdm

logger = logging.getLogger(__name__)

# Loggers whose INFO lines repeat for every task and condition; their warnings and errors still show.
CHATTY = ("lm_eval", "absl", "rh_tasks.suite.tasks")
# Loggers whose warnings show once per call site.
DEDUPLICATED = ("lm_eval",)


def _under(name: str, roots: tuple[str, ...]) -> bool:
    return any(name == root or name.startswith(root + ".") for root in roots)


class QuietRepeats(logging.Filter):
    """Drops the INFO lines of :data:`CHATTY` loggers and lets each lm-eval message through once.

    A message is its logger and call site (file and line): lm-eval formats task names into its messages, so
    "niah: Custom kwargs ..." and "mmlu_anatomy: Custom kwargs ..." are one message, shown once. The same filter
    may sit on several handlers; a record it let through once passes them all.
    """

    def __init__(self) -> None:
        super().__init__()
        self._first: dict[tuple, logging.LogRecord] = {}
        self._repeats: dict[int, logging.LogRecord] = {}  # kept alive so that ids stay unique

    @property
    def repeats(self) -> int:
        """How many repeated messages were held back."""
        return len(self._repeats)

    def filter(self, record: logging.LogRecord) -> bool:
        if _under(record.name, CHATTY) and record.levelno < logging.WARNING:
            return False
        if not _under(record.name, DEDUPLICATED):
            return True
        first = self._first.setdefault((record.name, record.pathname, record.lineno), record)
        if first is record:
            return True
        self._repeats[id(record)] = record
        return False


@contextmanager
def _task_bars_off() -> Iterator[None]:
    """lm-eval draws a bar per task while building its requests, and has no switch for it."""
    import lm_eval.api.task as task_module

    original = getattr(task_module, "tqdm", None)
    if original is None:  # a release that draws no such bar, or draws it elsewhere
        yield
        return
    task_module.tqdm = functools.partial(original, disable=True)
    try:
        yield
    finally:
        task_module.tqdm = original


@contextmanager
def suite_output(verbose: bool = False) -> Iterator[None]:
    """Log lines print above the progress bar; unless ``verbose``, lm-eval's chatter and repeats are held back."""
    loggers = [logging.getLogger(), logging.getLogger("lm_eval")]
    loggers = loggers[:1] + [log for log in loggers[1:] if log.handlers]  # lm-eval's own handler, if it set one
    with logging_redirect_tqdm(loggers=loggers), _task_bars_off():
        if verbose:
            yield
            return
        quiet = QuietRepeats()
        handlers = [handler for log in loggers for handler in log.handlers]
        for handler in handlers:
            handler.addFilter(quiet)
        try:
            yield
        finally:
            for handler in handlers:
                handler.removeFilter(quiet)
            if quiet.repeats:
                logger.info(
                    "%d repeated lm-eval warnings were not shown (--verbose shows every log line)", quiet.repeats
                )
