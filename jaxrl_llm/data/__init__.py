"""Readers of real data formats and generators of tasks with verifiable answers."""

from jaxrl_llm.data.arithmetic import generate_problems
from jaxrl_llm.data.gsm8k import SAMPLE_FILE as GSM8K_SAMPLE_FILE
from jaxrl_llm.data.gsm8k import parse_final_answer, read_gsm8k_jsonl
from jaxrl_llm.data.jsonl import DatasetFormatError
from jaxrl_llm.data.problems import Problem, chat_messages, encode_prompts
from jaxrl_llm.data.verifiers import exact_match_reward, extract_answer, format_reward

__all__ = [
    "GSM8K_SAMPLE_FILE",
    "DatasetFormatError",
    "Problem",
    "chat_messages",
    "encode_prompts",
    "exact_match_reward",
    "extract_answer",
    "format_reward",
    "generate_problems",
    "parse_final_answer",
    "read_gsm8k_jsonl",
]
