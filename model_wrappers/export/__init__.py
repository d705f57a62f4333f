"""Masked checkpoints: a ``phase=all`` masking condition written into a model's weights for serving engines.

:mod:`.weights` turns a condition into tensor edits, :mod:`.checkpoint` writes them at the least disk cost,
:mod:`.export` verifies the folder against ``rh-masked``, :mod:`.source` resolves the condition through
``rh-masked``, and :mod:`.record` reads back what an exported folder is (without importing torch).
"""
