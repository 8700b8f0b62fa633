"""The offline demo: a tiny GPT-NeoX family trained on the CPU, swept and reported."""
