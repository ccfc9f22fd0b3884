"""The method's math, pure: frame weights from query/key states, budgets, in-frame selectors. No model,
nothing else of the package."""
