"""Other harnesses' files and facts: lm-eval results import, Pythia's published numbers and presets."""
