"""Flax Linen modules: MLP actor-critic, ReaCritic transformer critic, Llama-family decoder,
checkpoint readers."""

from jaxrl_llm.models.distributions import Categorical, DiagGaussian
from jaxrl_llm.models.actor_critic import SeparateActorCritic
from jaxrl_llm.models.mlp import MLP, ActorCritic, CategoricalPolicy, ValueMLP
from jaxrl_llm.models.reacritic import (
    DiscreteReaCriticEnsemble,
    ReaCritic,
    ReaCriticEnsemble,
    ReaCriticValue,
)
from jaxrl_llm.models.checkpoints import load, load_gguf, load_hf, save_hf
from jaxrl_llm.models.kv_cache import KVCache, init_cache
from jaxrl_llm.models.llama import (
    LlamaForCausalLM,
    forward,
    hidden_states,
    init_params,
    make_apply_fn,
    positions_from_mask,
    project_to_vocab,
)
from jaxrl_llm.models.llama_config import LlamaConfig, RopeScaling, tiny_config
from jaxrl_llm.models.logprobs import (
    completion_logprobs_and_entropy,
    logprobs_from_hidden,
    token_logprobs_and_entropy,
)
from jaxrl_llm.models.lora import (
    LoraAdapters,
    apply_lora,
    lora_init,
    lora_optimizer,
    merge_lora,
    unmerge_lora,
)

__all__ = [
    "MLP",
    "ActorCritic",
    "CategoricalPolicy",
    "Categorical",
    "DiagGaussian",
    "DiscreteReaCriticEnsemble",
    "ReaCritic",
    "ReaCriticEnsemble",
    "ReaCriticValue",
    "SeparateActorCritic",
    "ValueMLP",
]
__all__ += [
    "KVCache",
    "LlamaConfig",
    "LlamaForCausalLM",
    "LoraAdapters",
    "RopeScaling",
    "apply_lora",
    "forward",
    "hidden_states",
    "init_cache",
    "init_params",
    "load",
    "load_gguf",
    "load_hf",
    "logprobs_from_hidden",
    "lora_init",
    "lora_optimizer",
    "make_apply_fn",
    "merge_lora",
    "positions_from_mask",
    "project_to_vocab",
    "save_hf",
    "tiny_config",
    "token_logprobs_and_entropy",
    "completion_logprobs_and_entropy",
    "unmerge_lora",
]
