"""The tiny model and budget the offline LM tests (ShiQ, DPO) share."""

OVERRIDES = {"hidden_size": "32", "intermediate_size": "64", "num_layers": "1", "num_heads": "2", "num_kv_heads": "1"}
TINY = dict(
    model="tiny",
    model_overrides=OVERRIDES,
    max_prompt_tokens=32,
    max_completion_tokens=24,
    batch_size=8,
    learning_rate=3e-3,
    num_updates=16,
)
