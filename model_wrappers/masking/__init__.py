"""The intervention: which modules of an architecture hold the heads, the hooks that mask them, and the checks
(audit, canary) that prove the hooks ran and changed something."""
