"""Detection samples: needle-in-a-haystack prompts built exactly as the ``niah`` task builds them, on disjoint data.

Scores should reflect the behaviour that is later evaluated, so the prompt is ``niah``'s: the same user turn,
the chat template when the tokenizer has one, and the needle's ``answer_prefix`` opening the answer. The model
therefore generates only the answer, and the needle span is the answer's tokens inside the context (the
reference's ``real_needle``). The span comes from the tokenizer's character offsets, which is exact; the
reference searches for a window covering 90% of the needle's token set instead, and misses needles whose
tokenization changes in context.

The prompt's tokens are spliced from the haystack's cached tokens (see ``rh_tasks.shared.token_splice``) and equal
those of tokenizing the prompt text.

Detection uses its own haystack (chapters IX-XVI of *The Time Machine*) and needles, disjoint from
``niah``'s, so that the heads are not found on the very items they are later evaluated on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from rh_tasks.niah.haystack import PROMPT, insert_needle, load_haystack
from rh_tasks.shared import token_splice
from rh_tasks.shared.task_data import TASK_DATA

from .definitions import NULL_QUESTION

DETECT_HAYSTACK = "haystack/time_machine_ch09-16.txt.gz"
DETECT_NEEDLES = "needles/detect.jsonl"
NEEDLE_KEYS = ("id", "needle", "question", "answer_prefix", "answer")


@dataclass(frozen=True)
class DetectionSample:
    sample_id: str  # "<needle id>/<length>/<depth>"
    needle_id: str
    length: int
    depth: float
    prompt_ids: tuple[int, ...]
    span: tuple[int, int]  # [start, end) token positions of the answer inside the prompt
    answer: str
    question: tuple[int, int]  # [start, end) token positions of the question inside the prompt
    # Tokens of the null question in the question's place; None if the tokens before the question would change.
    null_question_ids: tuple[int, ...] | None

    @property
    def null_prompt_ids(self) -> tuple[int, ...]:
        """The prompt up to the question, then the null question: all a null-question prefill needs (causal)."""
        if self.null_question_ids is None:
            raise ValueError(
                f"{self.sample_id}: the tokenizer merges the null question {NULL_QUESTION!r} with the text before "
                "it, so the question and the null question cannot be compared token by token (query_focus)."
            )
        return self.prompt_ids[: self.question[0]] + self.null_question_ids


def load_needles(spec: str | None) -> list[dict]:
    """Needle triples: all packaged detection needles (``None``), some of them by id ("a,b"), or a JSONL file."""
    if spec is not None and Path(spec).is_file():
        triples = [json.loads(line) for line in Path(spec).read_text(encoding="utf-8").splitlines() if line.strip()]
        source = spec
    else:
        triples = TASK_DATA.read_jsonl(DETECT_NEEDLES)
        source = DETECT_NEEDLES
        if spec is not None:
            by_id = {t["id"]: t for t in triples}
            wanted = [s.strip() for s in spec.split(",") if s.strip()]
            unknown = [n for n in wanted if n not in by_id]
            if unknown:
                raise ValueError(
                    f"Unknown detection needle ids {unknown}; packaged ids: {', '.join(by_id)}. "
                    "Or pass a JSONL file with keys " + ", ".join(NEEDLE_KEYS) + "."
                )
            triples = [by_id[n] for n in wanted]
    if not triples:
        raise ValueError(f"{source} holds no needles.")
    for triple in triples:
        missing = [k for k in NEEDLE_KEYS if k not in triple]
        if missing:
            raise ValueError(f"Needle {triple.get('id', triple)!r} in {source} lacks keys {missing}.")
        if triple["answer"] not in triple["needle"]:
            raise ValueError(
                f"Needle {triple['id']!r}: its answer {triple['answer']!r} must appear verbatim in the needle, "
                "because copies are scored against the answer's tokens in the context."
            )
    return triples


def load_detect_haystack(spec: str | None) -> str:
    """The packaged detection haystack, or any text file or folder of ``.txt`` files."""
    return TASK_DATA.read_text(DETECT_HAYSTACK) if spec is None else load_haystack(spec)


def render_prompt(tokenizer, user_prompt: str, answer_prefix: str, chat_template: bool) -> str:
    """The full prompt string, as lm-eval renders a ``niah`` doc whose ``gen_prefix`` is ``answer_prefix``."""
    if chat_template:
        messages = [{"role": "user", "content": user_prompt}]
        templated = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return templated + answer_prefix
    return f"{user_prompt} {answer_prefix}"


def use_chat_template(tokenizer, requested: bool | None) -> bool:
    """Chat template when the tokenizer has one, unless disabled; asking for one it lacks is an error."""
    has = getattr(tokenizer, "chat_template", None) is not None
    if requested and not has:
        raise ValueError("The tokenizer has no chat template; run without --chat-template.")
    return has if requested is None else requested


def _special_tokens(tokenizer) -> tuple[list[int], list[int]] | None:
    """The ids the tokenizer adds before and after a text's tokens, or None if it does more than add them."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    for k in range(len(full) - len(plain) + 1):
        if full[k : k + len(plain)] == plain:
            return full[:k], full[k + len(plain) :]
    return None


def _encode(tokenizer, text: str, context, context_start: int, special_tokens: bool):
    """Ids and character offsets of ``text``, whose ``context`` starts at ``context_start``, from cached tokens."""
    added = _special_tokens(tokenizer) if special_tokens else ([], [])
    if added is None:
        encoding = tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)
        return encoding["input_ids"], encoding["offset_mapping"]
    context_end = context_start + len(context.text)
    pieces = [
        token_splice.literal(tokenizer, text[:context_start]),
        *context.pieces,
        token_splice.literal(tokenizer, text[context_end:]),
    ]
    ids, offsets = token_splice.splice_encode(tokenizer, pieces)
    prefix, suffix = added
    return prefix + ids + suffix, [(0, 0)] * len(prefix) + offsets + [(0, 0)] * len(suffix)


def build_sample(tokenizer, haystack: str, triple: dict, length: int, depth: float, chat_template: bool):
    """One sample of ``length`` prompt tokens (``niah``'s convention: the user turn, without template tokens)."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("Detection needs a fast tokenizer (character offsets locate the needle).")
    reserve = token_splice.count(tokenizer, PROMPT.format(context="", question=triple["question"]))
    context = insert_needle(tokenizer, haystack, triple["needle"], length - reserve, depth)
    user_prompt = PROMPT.format(context=context.text, question=triple["question"])
    text = render_prompt(tokenizer, user_prompt, triple["answer_prefix"], chat_template)
    base = text.find(user_prompt)
    if base < 0:
        raise ValueError(
            "The chat template rewrites the user turn, so the needle cannot be located; use --no-chat-template."
        )
    answer_start = base + PROMPT.index("{context}") + context.needle_start + triple["needle"].index(triple["answer"])
    answer_end = answer_start + len(triple["answer"])

    context_start = base + PROMPT.index("{context}")
    ids, offsets = _encode(tokenizer, text, context, context_start, special_tokens=not chat_template)
    question_start = base + len(PROMPT.split("{question}")[0].format(context=context.text))
    question = _token_span(offsets, question_start, question_start + len(triple["question"]))

    null_text = render_prompt(
        tokenizer,
        PROMPT.format(context=context.text, question=NULL_QUESTION),
        triple["answer_prefix"],
        chat_template,
    )
    null_ids, null_offsets = _encode(tokenizer, null_text, context, context_start, special_tokens=not chat_template)
    null_question = _token_span(null_offsets, question_start, question_start + len(NULL_QUESTION))
    comparable = null_question[0] == question[0] and null_ids[: question[0]] == ids[: question[0]]
    return DetectionSample(
        sample_id=f"{triple['id']}/{length}/{depth:g}",
        needle_id=triple["id"],
        length=length,
        depth=depth,
        prompt_ids=tuple(ids),
        span=_token_span(offsets, answer_start, answer_end),
        answer=triple["answer"],
        question=question,
        null_question_ids=tuple(null_ids[null_question[0] : null_question[1]]) if comparable else None,
    )


def _token_span(offsets, start: int, end: int) -> tuple[int, int]:
    """``[first, last + 1)`` of the tokens overlapping characters ``[start, end)``."""
    inside = [i for i, (s, e) in enumerate(offsets) if s < end and e > start and e > s]
    return inside[0], inside[-1] + 1


def build_samples(
    tokenizer, *, lengths, depths, needles: str | list[dict] | None = None, haystack=None, chat_template=None
) -> list[DetectionSample]:
    """The lengths x depths x needles grid, shortest prompts first so batches pad little.

    ``needles`` is a :func:`load_needles` spec, or the triples it returned.
    """
    chat = use_chat_template(tokenizer, chat_template)
    text = load_detect_haystack(haystack)
    triples = needles if isinstance(needles, list) else load_needles(needles)
    samples = [
        build_sample(tokenizer, text, triple, length, depth, chat)
        for triple in triples
        for length in lengths
        for depth in depths
    ]
    return sorted(samples, key=lambda s: (len(s.prompt_ids), s.sample_id))
