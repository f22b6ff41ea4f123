"""Serving memory: how many sequences a GPU's KV cache holds, as a serving engine accounts for it."""
