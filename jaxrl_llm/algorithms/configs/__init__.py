"""The algorithms' typed configs, kept free of JAX imports so `jaxrl-llm --help` is quick."""
