"""jaxrl_llm: reinforcement learning of and with language models in JAX/Flax."""

import os as _os

# transformers prints "PyTorch was not found..." when imported without torch; we use only
# its tokenizers, so that advice is noise (set the variable to 0 to see it again).
_os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
