"""Commands over the library: each a client of `Pipeline`, none of another app nor of the CLI's presentation."""
