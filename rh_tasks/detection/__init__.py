"""Retrieval-head detection (Wu et al. 2024, arXiv 2404.15574): find the heads that copy the needle.

``prompts`` builds the samples, ``attention_probe`` records what each head attends to during fast generation,
``copy_events`` turns arg-max positions into copy scores and ``attention_mass`` computes the attention-mass
definitions (HeadKV's, a QRHead-style one); ``definitions`` names them all, ``detect`` drives the loop,
``aggregate`` writes one file per definition; ``reference`` is the slow eager oracle the fast path is tested
against.
"""
