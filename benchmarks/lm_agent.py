"""Multi-turn LM agent loop: environment turns per second of our compiled loop vs a verl-agent-style host loop.

What is measured. `N` episodes of `Maze-v0` (4 x 4, `env_kwargs={"size": 4}`) played for up to
`max_turns` turns by a language model that answers one action per turn, with the last
`history_length` (observation, action) pairs in its prompt. Both sides use the same model with
the same weights (float32), the same prompt text, the same initial states (`reset_grouped`
with the same key: `num_groups` x `group_size` episodes, members of a group start alike), the
same stop tokens, `max_new_tokens` and sampling setting: greedy by default, so that both sides
play the same episodes (checked row by row every rep) and do the same work; `--temperature 1`
samples on both sides (no top-k / top-p). Turns/s = active (episode, turn) rows actually played
/ wall seconds of one rollout, a row being active while its episode is still running (both
counts are printed). The two sides alternate inside each repetition (order swapped every rep)
and medians are reported: the machine is shared and absolute timings vary 2-10x between runs,
so only the same-run ratio means anything.

- ours: `jaxrl_llm.algorithms.lm_agent.rollout` jitted as one program (`agent_rollout`: a
  `lax.scan` over turns, on-device prompt assembly from token tables, the KV-cache sampler
  `rollout.sampling.generate`, on-device byte-level parsing and vmapped `step_env`). Every turn
  has the same shapes: all `N` rows are prefilled over the fixed prompt window (finished
  episodes included, they only skip decoding; unfilled history slots are masked positions);
  on the first turn one prompt per group is prefilled and its cache shared (`prompt_copies`).
- peer (verl-agent style, host-driven): per turn, for the episodes still running, render each
  observation as text (`observation_text` of `cell_codes`), build the prompt string (chat head,
  task and legend, the history, the current observation, the question naming the actions and
  the answer format, chat tail; the tiny model's compact style has no task and no question, as
  `agent_text` lays it out) and tokenize the batch with the HF tokenizer (left padding), call
  transformers' PyTorch `LlamaForCausalLM.generate` (our weights converted to its state dict
  through the checkpoint layout table), decode the answers, parse them with Python regexes
  (`agent_text.parse_actions`' rules: `<action>(up|right|down|left)</action>`, else the bare word,
  else exactly one action word named as a whole word), then step the environments one
  by one in Python with the jitted per-env `step_env` (+ `cell_codes` for the next observation),
  as verl-agent steps its Python envs one by one, and keep the history in Python lists.
  Finished episodes drop out of the batch. torch's intra-op threads are set to whichever of 1
  or all cores is faster on a probe forward pass (on a loaded machine 2 threads can be many
  times slower than 1); XLA keeps its defaults.

Cases: `tiny` (our from-scratch ~1M-parameter Llama with the character tokenizer, after a
short supervised warm-up on random-walk transcripts, 8 episodes per step, so that its answers
are valid actions and episodes move and end) at N = 64 (16 groups x 4), 8 new tokens;
`smollm2` (SmolLM2-135M-Instruct, bundled Q4_1 GGUF dequantised to float32, no fine-tuning) at
N = 16 (4 groups x 4), 12 new tokens. 6 turns, history 2. SmolLM2's reps stop early when the
case would run past ~15 minutes (the table says how many ran).

Checks (reported): max |logit difference| ours vs transformers on one prompt; the peer's
first-turn prompt ids against our compiled prompts; per rep, the (episode, turn) rows on which
the two sides agree (active, action, validity; 100% expected when greedy, up to float ties).

Where the time goes. Peer: wall-clock timers around each phase; prefill = the first forward call
inside each `generate` (a forward hook), decode = the rest of `generate`. Ours: separately jitted
pieces on the shapes and prompts of the last rep's rollout: the prefill (cache init + forward
over the window + last-position logits) of the first turn's and of a later turn's prompts, the
whole loop with a model-free policy (`random_walk_policy`: env + prompt assembly + parsing +
scan plumbing), and prompt assembly, parsing and env stepping each alone, scanned over the
turns; decode = rollout - prefill - model-free loop. Also `generate` alone on one turn, and
transformers' forward on the same [N, prompt window] batch.

    python benchmarks/lm_agent.py [--reps 3] [--cases tiny smollm2] [--quick] [--temperature 0]

Prints a markdown table and appends it, with date and machine, to benchmarks/RESULTS.md under
"## LM agent loop (benchmarks/lm_agent.py)" (not with --quick or --no-write).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import platform
import re
import statistics
import sys
import time
from functools import partial

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from results_file import append_to_section  # noqa: E402  (benchmarks/ is the script's folder)

from jaxrl_llm.algorithms import lm_agent  # noqa: E402
from jaxrl_llm.algorithms.configs.lm_agent import LMAgentConfig  # noqa: E402
from jaxrl_llm.algorithms.lm_task import load_model  # noqa: E402
from jaxrl_llm.envs.render import cell_codes  # noqa: E402
from jaxrl_llm.models.checkpoints.layout import flatten_to_files  # noqa: E402
from jaxrl_llm.models.checkpoints.safetensors_hf import config_to_hf  # noqa: E402
from jaxrl_llm.models.llama import forward, positions_from_mask, prefill, prefix_cache, project_to_vocab  # noqa: E402
from jaxrl_llm.rollout import agent_text  # noqa: E402
from jaxrl_llm.rollout.agent import random_walk_policy  # noqa: E402
from jaxrl_llm.rollout.env_rollout import reset_grouped  # noqa: E402
from jaxrl_llm.rollout.sampling import generate  # noqa: E402

HEADING = "## LM agent loop (benchmarks/lm_agent.py)"

CASES = {
    "tiny": dict(
        model="tiny",
        num_groups=16,
        group_size=4,
        max_new_tokens=8,
        sft_warmup_steps=80,
        sft_learning_rate=3e-3,
    ),
    "smollm2": dict(model="smollm2-135m-instruct", num_groups=4, group_size=4, max_new_tokens=12),
}
QUICK = {"tiny": dict(num_groups=4, sft_warmup_steps=30), "smollm2": dict(num_groups=1)}
WARMUP_GROUPS = 2  # the warm-up plays 2 x group_size episodes per step (the full N costs ~8x the time)
CASE_BUDGET_S = {"smollm2": 12 * 60}  # no new rep starts past this (the pieces then take ~2 more minutes)


def say(*args):
    print(*args, file=sys.stderr, flush=True)


def case_config(name: str, args) -> LMAgentConfig:
    fields = dict(
        env="Maze-v0",
        env_kwargs={"size": 4},
        max_turns=args.max_turns,
        history_length=2,
        temperature=args.temperature if args.temperature > 0 else 1.0,
        remat=False,
        **CASES[name],
    )
    if args.quick:
        fields.update(QUICK[name])
    return LMAgentConfig(**fields)


# ---- the same weights in transformers ---------------------------------------------------------


def torch_model(params, model_config):
    """transformers' LlamaForCausalLM holding our parameters (our tree -> HF names via the
    checkpoint layout table, [in, out] kernels transposed to [out, in])."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if model_config.architecture != "llama" or model_config.rope_scaling is not None:
        raise ValueError("this benchmark converts plain Llama configs only")
    hf_config = LlamaConfig(**config_to_hf(model_config))
    model = LlamaForCausalLM(hf_config).to(torch.float32)
    state = {
        name: torch.from_numpy(np.array(array, np.float32))
        for name, array in flatten_to_files(jax.device_get(params), model_config, "hf").items()
    }
    missing, unexpected = model.load_state_dict(state, strict=False)
    allowed_missing = {"lm_head.weight"} if model_config.tie_embeddings else set()
    if set(missing) - allowed_missing or unexpected:
        raise RuntimeError(f"weight conversion: missing {missing}, unexpected {unexpected}")
    if model_config.tie_embeddings:
        model.tie_weights()
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    return model.eval()


def logits_difference(run, model, prompt_ids: list[int]) -> float:
    """max |logits ours - logits transformers| over one prompt (every position)."""
    import torch

    tokens = jnp.asarray([prompt_ids], jnp.int32)
    ours, _ = forward(
        run.base_params, run.model_config, tokens, positions_from_mask(jnp.ones_like(tokens, bool))
    )
    with torch.inference_mode():
        theirs = model(torch.tensor([prompt_ids])).logits.numpy()
    return float(np.max(np.abs(np.asarray(ours) - theirs)))


# ---- the peer: a verl-agent-style host loop ---------------------------------------------------


class HostLoop:
    """Host-driven agent loop (module docstring); `play(key)` returns its rows and phase timers."""

    PHASES = ("env", "prompt", "prefill", "decode", "parse")

    def __init__(self, run: lm_agent.AgentSetup, model):
        import torch

        self.torch = torch
        self.run, self.model = run, model
        config, text, tokenizer, env = run.config, run.text, run.tokenizer, run.env
        compact = agent_text.resolve_prompt_style(config.prompt_style, tokenizer) == "compact"
        self.headers = agent_text.COMPACT_HEADERS if compact else agent_text.FULL_HEADERS
        chat_head, self.chat_tail = agent_text.chat_pieces(tokenizer)
        self.head = chat_head + ("" if compact else agent_text.instructions(env))
        self.question = "" if compact else agent_text.question(env, text.action_format)
        self.words = text.action_words
        alternatives = "|".join(self.words)
        self.tag = re.compile(rf"<action>({alternatives})</action>")
        self.mention = re.compile(rf"(?<![a-z])({alternatives})(?![a-z])")
        self.env_key = jax.random.PRNGKey(0)  # Maze's step is deterministic

        def step_and_render(key, state, action):
            _, state, reward, terminated, _ = env.step_env(key, state, action, run.env_params)
            return state, reward, terminated, cell_codes(env, state)

        self.step = jax.jit(step_and_render)
        self.render = jax.jit(jax.vmap(lambda state: cell_codes(env, state)))
        self.reset = jax.jit(
            lambda key: (
                reset_grouped(key, env, run.env_params, config.num_groups, config.group_size).env_state
            )
        )
        # compile the per-env step for both input kinds it sees (numpy states after the reset, jax arrays after)
        first = jax.tree.map(lambda x: x[0], jax.device_get(self.reset(jax.random.PRNGKey(0))))
        jax.block_until_ready(self.step(self.env_key, self.step(self.env_key, first, 0)[0], 0))
        self.slots = self.real_tokens = 0
        self.forward_starts: list[float] = []
        self.forward_ends: list[float] = []
        model.register_forward_pre_hook(
            lambda module, inputs: self.forward_starts.append(time.perf_counter())
        )
        model.register_forward_hook(
            lambda module, inputs, output: self.forward_ends.append(time.perf_counter())
        )

    def prompt_text(self, history, observation: str) -> str:
        h = self.headers
        past = "".join(
            f"{h['past']}{obs}{h['action']}{answer}\n"
            for obs, answer in history[-self.run.text.history_length :]
        )
        return f"{self.head}{past}{h['current']}{observation}{self.question}{self.chat_tail}"

    def generate(self, prompts: list[str], temperature: float):
        """(answer ids [n, <=M] numpy, prefill seconds, generate seconds, tokenize seconds)."""
        torch, run = self.torch, self.run
        started = time.perf_counter()
        batch = run.tokenizer(
            prompts, add_special_tokens=False, padding=True, padding_side="left", return_tensors="pt"
        )
        tokenized = time.perf_counter()
        self.slots += batch["input_ids"].numel()
        self.real_tokens += int(batch["attention_mask"].sum())
        sampling = (
            dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0)
            if temperature > 0
            else dict(do_sample=False)
        )
        self.forward_starts.clear()
        self.forward_ends.clear()
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                max_new_tokens=run.config.max_new_tokens,
                eos_token_id=list(run.stop_tokens),
                pad_token_id=run.text.pad_token,
                **sampling,
            )
        generated = time.perf_counter()
        prefill = self.forward_ends[0] - self.forward_starts[0]
        answers = out[:, batch["input_ids"].shape[1] :].numpy()
        return answers, prefill, generated - tokenized, tokenized - started

    def parse(self, answer: str) -> tuple[int, bool]:
        """`agent_text.parse_actions`' rules: the first `<action>W</action>`, else the whole answer
        being a word, else the answer naming exactly one action word as a whole word."""
        answer = answer.lower()
        tagged = self.tag.search(answer)
        if tagged:
            return self.words.index(tagged.group(1)), True
        if answer.strip(" \t\n\r") in self.words:
            return self.words.index(answer.strip(" \t\n\r")), True
        mentioned = set(self.mention.findall(answer))
        if len(mentioned) == 1:
            return self.words.index(mentioned.pop()), True
        return 0, False

    def pick_threads(self, key, probe: int = 4) -> dict[int, float]:
        """Sets torch's intra-op threads to the faster of 1 and all cores (on a loaded machine
        OpenMP's spinning threads can make 2 threads many times slower than 1), timed on one forward
        pass over `probe` first-turn prompts; returns {threads: seconds}. Then warms `generate` up."""
        torch, text = self.torch, self.run.text
        codes = np.asarray(self.render(self.reset(jax.random.split(key)[0])))[:probe]
        prompts = [self.prompt_text([], agent_text.observation_text(text.style, c)) for c in codes]
        batch = self.run.tokenizer(prompts, add_special_tokens=False, padding=True, return_tensors="pt")
        seconds = {}
        with torch.inference_mode():
            for threads in sorted({1, os.cpu_count() or 1}):
                torch.set_num_threads(threads)
                self.model(**batch)
                start = time.perf_counter()
                self.model(**batch)
                seconds[threads] = time.perf_counter() - start
        torch.set_num_threads(min(seconds, key=seconds.get))
        self.generate(prompts, 0.0)
        return seconds

    def play(self, key, temperature: float) -> dict:
        run, config, text = self.run, self.run.config, self.run.text
        timers = dict.fromkeys(self.PHASES, 0.0)
        self.slots = self.real_tokens = 0
        batch, turns = config.num_envs, config.max_turns
        started = time.perf_counter()
        start = self.reset(jax.random.split(key)[0])  # the reset key agent_rollout uses
        codes = list(np.asarray(self.render(start)))  # the reset is batched (one call), then per env
        start = jax.device_get(start)
        states = [jax.tree.map(lambda x, b=b: x[b], start) for b in range(batch)]
        timers["env"] += time.perf_counter() - started
        history: list[list[tuple[str, str]]] = [[] for _ in range(batch)]
        running = list(range(batch))
        active = np.zeros((batch, turns), bool)
        actions = np.zeros((batch, turns), np.int32)
        valid = np.zeros((batch, turns), bool)
        first_prompts = None
        for turn in range(turns):
            if not running:
                break
            tick = time.perf_counter()
            observations = {b: agent_text.observation_text(text.style, codes[b]) for b in running}
            prompts = [self.prompt_text(history[b], observations[b]) for b in running]
            timers["prompt"] += time.perf_counter() - tick
            answers, prefill, sampling, tokenizing = self.generate(prompts, temperature)
            timers["prompt"] += tokenizing
            timers["prefill"] += prefill
            timers["decode"] += sampling - prefill
            if turn == 0:
                first_prompts = prompts
            tick = time.perf_counter()
            texts = run.tokenizer.batch_decode(answers, skip_special_tokens=True)
            parsed = [self.parse(answer) for answer in texts]
            for b, (action, ok) in zip(running, parsed, strict=True):
                active[b, turn], actions[b, turn], valid[b, turn] = True, action, ok
                history[b].append(
                    (observations[b], text.answer_text(action) if ok else agent_text.INVALID_ACTION_TEXT)
                )
            timers["parse"] += time.perf_counter() - tick
            tick = time.perf_counter()
            still = []
            for b, (action, ok) in zip(running, parsed, strict=True):
                if not ok:  # an invalid answer leaves the environment where it is
                    still.append(b)
                    continue
                states[b], _, terminated, next_codes = self.step(self.env_key, states[b], action)
                codes[b] = np.asarray(next_codes)
                if not bool(terminated):
                    still.append(b)
            running = still
            timers["env"] += time.perf_counter() - tick
        wall = time.perf_counter() - started
        return dict(
            wall=wall,
            turns=int(active.sum()),
            timers=timers,
            active=active,
            action=actions,
            valid=valid,
            first_prompts=first_prompts,
            prefill_slots=self.slots,
            prompt_tokens=self.real_tokens,
        )


# ---- ours, whole and in pieces ----------------------------------------------------------------


def timed(fn, *args):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - start


def best_of(fn, *args, reps: int = 3) -> float:
    return statistics.median(timed(fn, *args) for _ in range(reps))


@partial(jax.jit, static_argnames=("config", "max_new_tokens"))
def prefill_only(params, tokens, mask, prefix, *, config, max_new_tokens):
    """The prefill `generate` runs: the window after the shared head (whose cache `prefix` the
    loop computes once per rollout) into a fresh cache, last-position logits."""
    max_len = prefix.max_len + tokens.shape[1] + max_new_tokens
    hidden, cache = prefill(params, config, tokens, mask, max_len, prefix)
    last = tokens.shape[1] - 1 - jnp.argmax(mask[:, ::-1], axis=1)
    return project_to_vocab(
        params, config, jnp.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0]
    ), cache


class Ours:
    """Our compiled loop: `lm_agent.rollout` under one `jax.jit`, and its pieces jitted apart."""

    def __init__(self, run: lm_agent.AgentSetup, temperature: float):
        self.run, self.temperature = run, temperature
        self.fn = jax.jit(lambda params, key, temp: lm_agent.rollout(run, params, key, temperature=temp))
        config = run.config
        walker = random_walk_policy(run.text, run.env.num_actions, run.stop_tokens[0], config.max_new_tokens)
        self.model_free = jax.jit(lambda key: lm_agent.rollout(run, None, key, policy=walker))

    def compile(self, key) -> float:
        start = time.perf_counter()
        self.compiled = self.fn.lower(self.run.base_params, key, self.temperature).compile()
        return time.perf_counter() - start

    def play(self, key) -> dict:
        start = time.perf_counter()
        rows = jax.block_until_ready(self.compiled(self.run.base_params, key, self.temperature))
        wall = time.perf_counter() - start
        active = np.asarray(rows.active)
        config, length = self.run.config, self.run.text.prompt_length
        mask = np.asarray(rows.prompt_mask)  # False on finished episodes' rows
        return dict(
            wall=wall,
            turns=int(active.sum()),
            # prefilled positions: one prompt per group on the first turn, every row after
            prefill_slots=(config.num_groups + (config.max_turns - 1) * config.num_envs) * length,
            prompt_tokens=int(mask[:: config.group_size, 0].sum() + mask[:, 1:].sum()),
            inactive_slots=int((~active[:, 1:]).sum()) * length,
            active=active,
            action=np.asarray(rows.action),
            valid=np.asarray(rows.valid_action),
            rows=rows,
        )

    def pieces(self, rows, rounds: int, torch_forward) -> dict:
        """Seconds of separately jitted pieces on the shapes and prompts of `rows` (module docstring).

        The model pieces (prefill alone and `generate` of the first turn and of a later turn, and
        `torch_forward(tokens, mask)` on the later turn's batch) run round-robin `rounds` times after
        a warm-up: on a shared machine only ratios taken within one round are stable, so besides
        medians this returns the prefill share of `generate` per round (median)."""
        run, config, text = self.run, self.run.config, self.run.text
        params, mc, group, m = run.base_params, run.model_config, config.group_size, config.max_new_tokens
        turns = config.max_turns

        def turn_prompts(t):
            # finished rows carry an all-False mask in `rows`; the loop prefilled them with their real
            # prompt (same shape, same cost): give them an all-True mask so every row has a position
            tokens, mask = rows.prompt_tokens[:, t], rows.prompt_mask[:, t] | ~rows.active[:, t, None]
            copies = group if t == 0 else 1
            return tokens[::copies], mask[::copies], copies

        def warm_and_time(fn, reps=3):
            jax.block_until_ready(fn())  # compile
            return best_of(fn, reps=reps)

        model_pieces = {}
        head = len(text.head)
        prefix = jax.jit(prefix_cache, static_argnums=1)(params, mc, text.head)
        for t in (0, 1):
            tokens, mask, copies = turn_prompts(t)
            model_pieces[f"prefill_turn{t}"] = partial(
                prefill_only, params, tokens[:, head:], mask[:, head:], prefix, config=mc, max_new_tokens=m
            )
            model_pieces[f"generate_turn{t}"] = partial(
                generate, params, mc, tokens[:, head:], mask[:, head:], jax.random.PRNGKey(1), m,
                temperature=self.temperature, stop_tokens=run.stop_tokens, pad_token=text.pad_token,
                active=rows.active[:, t], prompt_copies=copies, prefix=prefix,
            )  # fmt: skip
        model_pieces["torch_prefill_turn1"] = partial(torch_forward, *turn_prompts(1)[:2])
        samples = {name: [] for name in model_pieces}
        for fn in model_pieces.values():
            jax.block_until_ready(fn())  # compile / warm up
        for _ in range(rounds):
            for name, fn in model_pieces.items():
                samples[name].append(timed(fn))
        out = {name: statistics.median(values) for name, values in samples.items()}
        ratio = lambda a, b: statistics.median(x / y for x, y in zip(samples[a], samples[b], strict=True))
        share0, share1 = ratio("prefill_turn0", "generate_turn0"), ratio("prefill_turn1", "generate_turn1")
        g0, g1 = out["generate_turn0"], out["generate_turn1"]
        out.update(
            prefill_share_turn0=share0,
            prefill_share_turn1=share1,
            # the prefill's share of the rollout's model time: first turn + (turns - 1) later turns
            prefill_share=(share0 * g0 + (turns - 1) * share1 * g1) / (g0 + (turns - 1) * g1),
            ours_over_torch_prefill=ratio("prefill_turn1", "torch_prefill_turn1"),
            rounds=rounds,
        )
        out["model_free"] = warm_and_time(partial(self.model_free, jax.random.PRNGKey(7)))

        env, env_params, batch, turns = run.env, run.env_params, config.num_envs, config.max_turns
        start = reset_grouped(jax.random.PRNGKey(3), env, env_params, config.num_groups, group).env_state
        observe = jax.vmap(lambda state: agent_text.observation_tokens(text, cell_codes(env, state)))
        build = jax.vmap(lambda h, tok, msk: agent_text.build_prompt(text, h, tok, msk))
        parse = jax.vmap(lambda tok, msk: agent_text.parse_actions(text, tok, msk, run.stop_tokens))
        step = jax.vmap(env.step_env, in_axes=(0, 0, 0, None))
        history = jax.vmap(lambda _: agent_text.empty_history(text))(jnp.arange(batch))
        keys = jax.random.split(jax.random.PRNGKey(0), batch)

        def nudge(tree, never):
            """`tree` made to depend on `never` (always False), so no turn's work can be hoisted out of the scan."""
            return jax.tree.map(lambda x: x ^ never if x.dtype == bool else x + never.astype(x.dtype), tree)

        def scan_turns(body, carry):
            return jax.lax.scan(lambda c, _: (body(c), None), carry, None, length=turns)[0]

        def prompts_body(state):
            tokens, mask = observe(state)
            prompt, prompt_mask = build(history, tokens, mask)
            return nudge(state, (prompt.sum() + prompt_mask.sum()) < 0)

        def parse_body(answers):
            action, ok = parse(*answers)
            return nudge(answers, (action.sum() + ok.sum()) < 0)

        answers = (rows.answer_tokens[:, 1], rows.answer_mask[:, 1])
        actions = jnp.ones((batch,), jnp.int32)
        pieces = {
            "prompt": (jax.jit(lambda s: scan_turns(prompts_body, s)), start),
            "parse": (jax.jit(lambda a: scan_turns(parse_body, a)), answers),
            "env": (jax.jit(lambda s: scan_turns(lambda c: step(keys, c, actions, env_params)[1], s)), start),
        }
        for name, (fn, arg) in pieces.items():
            out[name] = warm_and_time(partial(fn, arg))
        return out


# ---- one case -----------------------------------------------------------------------------------


def agreement(ours: dict, peer: dict) -> float:
    """Fraction of (episode, turn) rows where both sides agree on active, action and validity."""
    same = (ours["active"] == peer["active"]) & (
        ~ours["active"] | ((ours["action"] == peer["action"]) & (ours["valid"] == peer["valid"]))
    )
    return float(same.mean())


def benchmark_case(name: str, args) -> dict:
    import torch

    case_started = time.perf_counter()
    config = case_config(name, args)
    say(f"[{name}] loading, N={config.num_envs} ...")
    loaded = load_model(config, verbose=False)
    warm_config = dataclasses.replace(config, num_groups=min(WARMUP_GROUPS, config.num_groups))
    run = dataclasses.replace(lm_agent.setup(warm_config, loaded, verbose=False), config=config)
    jax.block_until_ready(run.base_params)  # the warm-up runs asynchronously
    setup_s = time.perf_counter() - case_started
    say(f"[{name}] model + setup (incl. {config.sft_warmup_steps} warm-up steps) {setup_s:.1f} s")
    started = time.perf_counter()
    model = torch_model(run.base_params, run.model_config)
    convert_s = time.perf_counter() - started

    ours = Ours(run, args.temperature)
    compile_s = ours.compile(jax.random.PRNGKey(0))
    say(f"[{name}] ours compiled in {compile_s:.1f} s")
    peer = HostLoop(run, model)
    thread_seconds = peer.pick_threads(jax.random.PRNGKey(0))
    say(f"[{name}] transformers forward s by torch threads {thread_seconds}: using {torch.get_num_threads()}")

    timed_started = time.perf_counter()
    results = {"ours": [], "peer": []}
    for rep in range(args.reps):
        elapsed = time.perf_counter() - case_started
        if (
            rep
            and CASE_BUDGET_S.get(name)
            and elapsed + 1.5 * (time.perf_counter() - timed_started) / rep > (CASE_BUDGET_S[name])
        ):
            say(f"[{name}] stopping after {rep} reps to stay within {CASE_BUDGET_S[name] / 60:.0f} min")
            break
        key = jax.random.PRNGKey(100 + rep)
        for side in ("ours", "peer") if rep % 2 == 0 else ("peer", "ours"):
            results[side].append(ours.play(key) if side == "ours" else peer.play(key, args.temperature))
        o, p = results["ours"][-1], results["peer"][-1]
        say(
            f"[{name}] rep {rep}: ours {o['turns']} turns / {o['wall']:.2f} s = {o['turns'] / o['wall']:.1f}/s; "
            f"peer {p['turns']} turns / {p['wall']:.2f} s = {p['turns'] / p['wall']:.1f}/s "
            f"{ {k: round(v, 2) for k, v in p['timers'].items()} }; rows agreeing {agreement(o, p):.0%}"
        )
    reps_done = len(results["ours"])

    # checks: the converted model's logits, the peer's first prompts against our compiled ones
    rows = results["ours"][0]["rows"]
    ours_ids = [
        np.asarray(rows.prompt_tokens[b, 0])[np.asarray(rows.prompt_mask[b, 0])].tolist()
        for b in range(config.num_envs)
    ]
    peer_ids = run.tokenizer(results["peer"][0]["first_prompts"], add_special_tokens=False)["input_ids"]
    prompts_equal = float(np.mean([a == b for a, b in zip(ours_ids, peer_ids, strict=True)]))
    logit_diff = logits_difference(run, model, ours_ids[0])
    say(f"[{name}] max |logit diff| {logit_diff:.2e}, first-turn prompt ids equal {prompts_equal:.0%}")

    say(f"[{name}] ours pieces ...")

    def torch_forward(tokens, mask):
        with torch.inference_mode():
            model(
                input_ids=torch.from_numpy(np.asarray(tokens).astype(np.int64)),
                attention_mask=torch.from_numpy(np.asarray(mask).astype(np.int64)),
                logits_to_keep=1,
            )

    rounds = 3 if statistics.median(r["wall"] for r in results["ours"]) < 20 else 2
    pieces = ours.pieces(results["ours"][-1]["rows"], rounds, torch_forward)
    say(f"[{name}] ours pieces {pieces}")

    rate = lambda r: r["turns"] / r["wall"]
    ours_rate = statistics.median(rate(r) for r in results["ours"])
    peer_rate = statistics.median(rate(r) for r in results["peer"])
    median = lambda side, field: statistics.median(r[field] for r in results[side])
    return dict(
        name=name,
        config=config,
        reps_done=reps_done,
        prompt_length=run.text.prompt_length,
        num_params=sum(x.size for x in jax.tree_util.tree_leaves(run.base_params)),
        torch_threads=torch.get_num_threads(),
        thread_seconds=thread_seconds,
        setup_s=setup_s,
        convert_s=convert_s,
        compile_s=compile_s,
        case_s=time.perf_counter() - case_started,
        logit_diff=logit_diff,
        prompts_equal=prompts_equal,
        agreement=[agreement(o, p) for o, p in zip(results["ours"], results["peer"], strict=True)],
        ours_turns=[r["turns"] for r in results["ours"]],
        peer_turns=[r["turns"] for r in results["peer"]],
        ours_wall=median("ours", "wall"),
        peer_wall=median("peer", "wall"),
        ours_valid=float(np.mean([r["valid"][r["active"]].mean() for r in results["ours"]])),
        peer_valid=float(np.mean([r["valid"][r["active"]].mean() for r in results["peer"]])),
        ours_rate=ours_rate,
        peer_rate=peer_rate,
        ratio=ours_rate / peer_rate,
        paired=[rate(o) / rate(p) for o, p in zip(results["ours"], results["peer"], strict=True)],
        peer_timers={k: statistics.median(r["timers"][k] for r in results["peer"]) for k in HostLoop.PHASES},
        pieces=pieces,
        ours_slots=median("ours", "prefill_slots"),
        ours_real=median("ours", "prompt_tokens"),
        ours_inactive_slots=median("ours", "inactive_slots"),
        peer_slots=median("peer", "prefill_slots"),
        peer_real=median("peer", "prompt_tokens"),
        active_per_turn=results["ours"][-1]["active"].sum(axis=0).tolist(),
    )


# ---- report ------------------------------------------------------------------------------------


def markdown(results: list[dict], args) -> str:
    lines = [
        "| case | N | reps | turns played ours / peer (per rep) | wall s ours / peer (median) | turns/s ours "
        "| turns/s peer | ours ÷ peer (ratio of medians; per rep) | valid answers ours / peer |",
        "|---|---:|---:|---|---|---:|---:|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['name']} | {r['config'].num_envs} | {r['reps_done']} | {r['ours_turns']} / {r['peer_turns']} "
            f"| {r['ours_wall']:.2f} / {r['peer_wall']:.2f} | {r['ours_rate']:.1f} | {r['peer_rate']:.1f} "
            f"| **{r['ratio']:.2f}x**; {', '.join(f'{x:.2f}' for x in r['paired'])} "
            f"| {r['ours_valid']:.0%} / {r['peer_valid']:.0%} |"
        )
    lines += [
        "",
        "Where the time goes, seconds per rollout. Peer: median of each phase's timer over the reps (prefill = "
        "the first forward of each `generate`, decode = the rest of `generate`; other = wall - phases). Ours: "
        "total = median wall; model time = total - the whole loop run with a model-free policy, split into "
        "prefill and decode by the prefill's share of separately jitted `generate` calls on the first turn's "
        "and a later turn's prompts (prefill alone / `generate`, same round, weighted 1 : turns - 1); "
        "prompt / env / parse = observation tokens + prompt assembly, vmapped "
        "`step_env`, byte-level parsing, each jitted alone and scanned over the turns; other = model-free "
        "loop - those three (scan plumbing, row stacking, history).",
        "",
        "| case | side | total | prefill | decode | prompt build + tokenize | env step (+ render) | parse | other |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        t, p = r["peer_timers"], r["pieces"]
        lines.append(
            f"| {r['name']} | peer | {r['peer_wall']:.2f} | {t['prefill']:.2f} | {t['decode']:.2f} "
            f"| {t['prompt']:.3f} | {t['env']:.3f} | {t['parse']:.3f} | {r['peer_wall'] - sum(t.values()):.3f} |"
        )
        model = r["ours_wall"] - p["model_free"]
        prefill, decode = p["prefill_share"] * model, (1 - p["prefill_share"]) * model
        other = p["model_free"] - p["prompt"] - p["env"] - p["parse"]
        lines.append(
            f"| {r['name']} | ours | {r['ours_wall']:.2f} | {prefill:.2f} | {decode:.2f} "
            f"| {p['prompt']:.4f} | {p['env']:.4f} | {p['parse']:.4f} | {other:.4f} |"
        )
    lines += ["", "Per case:", ""]
    for r in results:
        c, p = r["config"], r["pieces"]
        active = r["active_per_turn"]
        threads = ", ".join(f"{k}: {v:.3f} s" for k, v in r["thread_seconds"].items())
        lines.append(
            f"- {r['name']}: {r['num_params'] / 1e6:.2f}M parameters, N = {c.num_groups} groups x {c.group_size}, "
            f"{c.max_turns} turns, at most {c.max_new_tokens} new tokens, history {c.history_length}, prompt "
            f"window {r['prompt_length']} tokens, temperature {args.temperature:g} on both sides, "
            f"{r['reps_done']} reps (case wall time {r['case_s'] / 60:.1f} min). Setup {r['setup_s']:.1f} s (load"
            f" + {c.sft_warmup_steps} warm-up steps), weight conversion {r['convert_s']:.1f} s, ours compile "
            f"{r['compile_s']:.1f} s. torch threads {r['torch_threads']} (probe forward by threads: {threads}). "
            f"Checks: max |logit diff| ours vs transformers {r['logit_diff']:.1e} (one prompt, every position); "
            f"first-turn prompt ids equal {r['prompts_equal']:.0%}; (episode, turn) rows on which both sides "
            f"agree (active, action, validity) per rep: {', '.join(f'{x:.0%}' for x in r['agreement'])}.\n"
            f"  Active rows per turn (ours, last rep): {active}: ours prefills all {c.num_envs} rows every turn "
            f"after the first, {r['ours_inactive_slots']:,.0f} of its {r['ours_slots']:,.0f} prefilled positions "
            f"per rollout belong to finished episodes and {r['ours_real']:,.0f} are real prompt tokens (the rest "
            f"are masked history slots of early turns); the peer prefills {r['peer_slots']:,.0f} positions "
            f"({r['peer_real']:,.0f} real, the rest left padding). Same-shape check on one later turn "
            f"[{c.num_envs}, {r['prompt_length']}] (medians of {p['rounds']} round-robin rounds): ours prefill "
            f"{p['prefill_turn1']:.3f} s, transformers forward {p['torch_prefill_turn1']:.3f} s (ours / "
            f"transformers per round: {p['ours_over_torch_prefill']:.2f}x); ours `generate` alone on that turn "
            f"{p['generate_turn1']:.3f} s (prefill share {p['prefill_share_turn1']:.0%}); first turn "
            f"({c.num_groups} unique prompts): `generate` {p['generate_turn0']:.3f} s, prefill share "
            f"{p['prefill_share_turn0']:.0%}; standalone `generate` for the whole rollout (first + {c.max_turns - 1} x "
            f"later turn) {p['generate_turn0'] + (c.max_turns - 1) * p['generate_turn1']:.2f} s vs the rollout's "
            f"{r['ours_wall']:.2f} s; ours loop with a model-free policy {p['model_free']:.4f} s."
        )
    return "\n".join(lines)


def append_results(table: str, args) -> None:
    load_average = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    block = (
        f"\n### {datetime.datetime.now():%Y-%m-%d %H:%M} — {platform.machine()}, {os.cpu_count()} CPU cores, "
        f"jax {jax.__version__}, load average {load_average}\n\n"
        "`python benchmarks/lm_agent.py "
        f"--reps {args.reps} --cases {' '.join(args.cases)} --temperature {args.temperature:g}`. Maze-v0 4x4, "
        "ours = `lm_agent.rollout` jitted (one program per rollout) vs a verl-agent-style host loop "
        "(per turn: host text rendering + HF tokenizer, transformers PyTorch `generate` on the running "
        "episodes, regex parsing, per-env jitted `step_env`), same weights, float32, alternated within each "
        "rep. Shared machine: absolute numbers vary 2-10x between runs; compare within a block.\n\n"
        f"{table}\n"
    )
    append_to_section(HEADING, block)


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--max-turns", type=int, default=6)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 (default): greedy on both sides")
    parser.add_argument("--quick", action="store_true", help="smoke run: small N, 1 rep, nothing written")
    parser.add_argument("--no-write", action="store_true", help="print only, do not append to RESULTS.md")
    args = parser.parse_args()
    if args.quick:
        args.reps, args.max_turns = 1, min(args.max_turns, 3)
    results = [benchmark_case(name, args) for name in args.cases]
    table = markdown(results, args)
    print(table)
    if not (args.quick or args.no_write):
        append_results(table, args)


if __name__ == "__main__":
    main()
