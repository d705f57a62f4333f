"""Retrieval-head detection (Wu et al. 2024, arXiv 2404.15574): find the heads that copy the needle.

``prompts`` builds the samples, ``attention_probe`` records each head's most-attended key during fast
generation, ``copy_events`` turns those into scores, ``detect`` drives the loop, ``aggregate`` writes the file;
``reference`` is the slow eager oracle the fast path is tested against.
"""
