"""Analysis layer: reads DataFrames of stored runs, never training code."""
