"""Code that drives a language model to obtain query/key states: the two-pass prior (`prior_pass`) and
the single pass that prunes inside the answer's own prefill (`single_pass`). The math they feed lives
in `prior.py`, `budget.py` and `selectors/`."""
