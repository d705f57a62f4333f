"""A task's options from lm-eval's metadata, with misspelt option names refused.

lm-eval hands a task one dict that merges ``--model_args`` into ``--metadata``, so an unknown key cannot be
refused outright: most are model arguments. A key that nearly matches one of the task's options, though, is
almost surely a typo, and ignoring it would quietly run the defaults instead of what the user asked for.
"""

from __future__ import annotations

import difflib

SIMILARITY = 0.75  # 'lenghts' ~ 'lengths' is 0.86; no lm-eval or rh-masked model argument reaches this


def check_option_names(task: str, metadata: dict, names) -> None:
    names = sorted(names)
    for key in metadata:
        if key in names:
            continue
        close = difflib.get_close_matches(key, names, n=1, cutoff=SIMILARITY)
        if close:
            raise ValueError(
                f"{task}: unknown option {key!r}; did you mean {close[0]!r}? The task's options are {', '.join(names)}."
            )


def task_options(task: str, metadata: dict, defaults: dict) -> dict:
    """``defaults`` overridden by the metadata's values."""
    check_option_names(task, metadata, defaults)
    return {key: metadata.get(key, default) for key, default in defaults.items()}
