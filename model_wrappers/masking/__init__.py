"""The intervention: which modules of an architecture hold the heads, the hooks that mask them or restrict them to
a window of positions, and the checks (audit, canary) that prove the hooks ran and changed something."""
