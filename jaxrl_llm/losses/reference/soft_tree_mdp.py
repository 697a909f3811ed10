"""A synthetic token tree MDP with its exact KL-regularised optimum (float64), for checking soft
Bellman losses: the ShiQ tests and `experiments/shiq/`.

States are heap-indexed nodes of a complete tree with `num_actions` children per node and
`depth` levels of decisions: child(s, a) = s·A + a + 1, ids ≥ `num_states` are terminal leaves.
Transitions are deterministic (a token appended to a prefix), γ = 1, v(leaf) = 0.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TreeMDP:
    ref_logits: np.ndarray  # [S, A] the reference policy's logits
    rewards: np.ndarray  # [S, A] r(s, a)
    num_actions: int
    depth: int

    @property
    def num_states(self) -> int:
        return (self.num_actions**self.depth - 1) // (self.num_actions - 1)

    def child(self, state, action):
        return state * self.num_actions + action + 1

    def all_paths(self) -> tuple[np.ndarray, np.ndarray]:
        """(states, actions) `[A^D, D]` of every root-to-leaf path."""
        states, actions = [], []
        for path in itertools.product(range(self.num_actions), repeat=self.depth):
            state, row = 0, []
            for action in path:
                row.append(state)
                state = self.child(state, action)
            states.append(row)
            actions.append(path)
        return np.array(states), np.array(actions)

    def soft_optimum(self, beta: float) -> tuple[np.ndarray, np.ndarray]:
        """float64 `(q* [S, A], v* [S])` of max E[Σ r] − β KL(π‖π_ref), by one backward sweep
        (children have larger ids): v*(s) = β log Σ_a π_ref(a|s) exp(q*(s, a)/β)."""
        log_ref = self.ref_logits - np.log(np.exp(self.ref_logits).sum(-1, keepdims=True))
        q = np.zeros((self.num_states, self.num_actions))
        v = np.zeros(self.num_states)
        for state in reversed(range(self.num_states)):
            for action in range(self.num_actions):
                nxt = self.child(state, action)
                q[state, action] = self.rewards[state, action] + (v[nxt] if nxt < self.num_states else 0.0)
            z = log_ref[state] + q[state] / beta
            v[state] = beta * (z.max() + np.log(np.exp(z - z.max()).sum()))
        return q, v

    def optimal_log_policy(self, beta: float) -> np.ndarray:
        """`[S, A]` log π*(a|s) = log softmax(ℓ_ref + q*/β)."""
        logits = self.ref_logits + self.soft_optimum(beta)[0] / beta
        shifted = logits - logits.max(-1, keepdims=True)
        return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def random_tree_mdp(seed: int, *, num_actions: int = 3, depth: int = 3, sequence_level: bool = False) -> TreeMDP:
    """Standard-normal reference logits and U(−1, 1) rewards; `sequence_level` keeps only the rewards
    of the last decision (a reward when the leaf is reached, on the last token)."""
    rng = np.random.default_rng(seed)
    num_states = (num_actions**depth - 1) // (num_actions - 1)
    ref_logits = rng.normal(size=(num_states, num_actions))
    rewards = rng.uniform(-1.0, 1.0, size=(num_states, num_actions))
    if sequence_level:
        first_leaf_parent = (num_actions ** (depth - 1) - 1) // (num_actions - 1)
        rewards[:first_leaf_parent] = 0.0
    return TreeMDP(ref_logits, rewards, num_actions, depth)
