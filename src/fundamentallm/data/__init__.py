"""Reading text, building token datasets, and the data tools (analysis, cleaning)."""
