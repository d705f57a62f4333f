"""A task's options from lm-eval's metadata, with misspelt option names refused and grids validated.

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
    if "max_gen_toks" in metadata:
        raise ValueError(
            f"{task}: max_gen_toks in --metadata would not change generation; lm-eval takes it as "
            "--gen_kwargs max_gen_toks=N."
        )
    check_option_names(task, metadata, defaults)
    return {key: metadata.get(key, default) for key, default in defaults.items()}


def as_list(task: str, name: str, value) -> list:
    """A metadata value that may be one item or a list of them, as a non-empty list."""
    if isinstance(value, (int, float, str)):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"{task} metadata {name}={value!r} must be a non-empty list.")
    return list(value)


def check_lengths_and_depths(
    task: str, lengths, depths, *, min_length: int, max_gen_toks: int, limit: int | None, depth_hint: str = ""
) -> tuple[list[int], list[float]]:
    """A long-context grid's lengths and depths as lists, or a ``ValueError`` that names the bad value and the fix."""
    lengths, depths = as_list(task, "lengths", lengths), as_list(task, "depths", depths)
    for length in lengths:
        if isinstance(length, bool) or not isinstance(length, int) or length < min_length:
            raise ValueError(f"{task} length {length!r} must be an integer number of tokens >= {min_length}.")
        if limit is not None and length + max_gen_toks > limit:
            raise ValueError(
                f"{task} length {length} plus max_gen_toks {max_gen_toks} exceeds the model's context of {limit} "
                f"tokens; lm-eval would silently cut the prompt. Use lengths <= {limit - max_gen_toks}."
            )
    for depth in depths:
        if isinstance(depth, bool) or not isinstance(depth, (int, float)) or not 0 <= depth <= 100:
            raise ValueError(f"{task} depth {depth!r} must be a percentage between 0 and 100{depth_hint}.")
    return lengths, depths
