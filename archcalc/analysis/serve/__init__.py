"""Serving memory: how many sequences a GPU's KV cache holds, as a serving engine accounts for it.
``analysis.serve`` is the analysis (one call, one record); ``sizes`` reads the decoder's sizes from
the graph, ``vllm`` is vLLM's accounting and defaults, ``capacity`` the blocks, groups and concurrency."""
