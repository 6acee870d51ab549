"""Corpus tools: analysing, cleaning and splitting a text corpus before training on it."""
