"""A tiny random Llama with the embedded model's tokenizer, needle samples for it, and a planted copy head."""

from contextlib import contextmanager

import torch
from conftest import kv_cache_in

from rh_tasks.detection.prompts import build_samples

PLANTED = (1, 2)  # (layer, query head); query head 3 shares its KV head


def embedded_tokenizer():
    """The embedded model's tokenizer; skips the test if the model is not installed."""
    import pytest
    from transformers import AutoTokenizer

    from model_wrappers.sources.gguf_cache import ModelCacheError, embedded_model_dir

    try:
        return AutoTokenizer.from_pretrained(embedded_model_dir())
    except ModelCacheError as err:
        pytest.skip(f"embedded model unavailable: {err}")


def tiny_llama(tokenizer):
    """2 layers, 4 query heads in 2 KV groups, SDPA, over the tokenizer's vocabulary."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True,
        attn_implementation="sdpa",
    )  # fmt: skip
    return LlamaForCausalLM(config).eval()


def needle_samples(tokenizer):
    return build_samples(tokenizer, lengths=[160, 200], depths=[30], needles="rye_bread,sailboat_name")


@contextmanager
def planted_copy_head(model, sample, answer: list[int]):
    """Test-only hooks: the model emits ``answer``, and head PLANTED attends to the needle token it emits.

    RoPE is made the identity, the planted KV head's key at each position encodes that position's token
    (needle positions slightly stronger, so a token that also occurs elsewhere is copied from the needle), and
    the planted query at each step is the code of the token about to be emitted. Its sibling query head gets a
    zero query (uniform attention), so it does not copy by accident.
    """
    gen = torch.Generator().manual_seed(1)
    codes = torch.nn.functional.normalize(torch.randn(model.config.vocab_size, 16, generator=gen), dim=-1)
    sequence = torch.tensor(list(sample.prompt_ids) + answer)
    first_answer_row = len(sample.prompt_ids) - 1
    state = {}

    def rows(length):
        return torch.arange(state["offset"], state["offset"] + length)

    def before_decoder(module, args, kwargs):
        cache = kv_cache_in([*args, *kwargs.values()])
        state["offset"] = cache.get_seq_length() if cache is not None else 0
        inputs = kwargs.get("input_ids") if kwargs.get("input_ids") is not None else kwargs["inputs_embeds"]
        state["end"] = state["offset"] + inputs.shape[1]

    def identity_rope(module, args, output):
        return torch.ones_like(output[0]), torch.zeros_like(output[1])

    def keys(module, args, output):  # [1, q, KV*16]
        positions = rows(output.shape[1])
        strength = 10 * (1 + 0.1 * ((positions >= sample.span[0]) & (positions < sample.span[1])).float())
        output[0, :, 16:32] = codes[sequence[positions]] * strength[:, None]
        return output

    def queries(module, args, output):  # [1, q, H*16]
        positions = rows(output.shape[1])
        step = (positions - first_answer_row).clamp(0, len(answer) - 1)
        output[0, :, 32:48] = codes[torch.tensor(answer)[step]]
        output[0, :, 48:64] = 0
        return output

    def forced(module, args, output):  # logits [1, q, V]; q may be 1 (logits_to_keep)
        step = state["end"] - 1 - first_answer_row
        output[0, -1] = -1e4
        output[0, -1, answer[min(step, len(answer) - 1)]] = 1e4
        return output

    attn = model.model.layers[PLANTED[0]].self_attn
    handles = [
        model.model.register_forward_pre_hook(before_decoder, with_kwargs=True),
        model.model.rotary_emb.register_forward_hook(identity_rope),
        attn.k_proj.register_forward_hook(keys),
        attn.q_proj.register_forward_hook(queries),
        model.lm_head.register_forward_hook(forced),
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
