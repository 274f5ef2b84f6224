"""Named recipes: which runs, what is measured, which figures answer one question."""
