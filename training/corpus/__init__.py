"""Corpus and annotation tooling: real-text sources, labelling packets, the real-set join, agreement."""
