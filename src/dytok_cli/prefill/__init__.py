"""Code that drives a language model to obtain query/key states: the two-pass prior (`prior_pass`), the
single pass that prunes inside the answer's own prefill (`single_pass`), and the prompt prefix each
reuses across a video's questions (`prefix`). The math they feed lives in `prior.py`, `budget.py` and
`selectors/`."""
