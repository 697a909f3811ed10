"""ReaCritic: output shapes for several (H, V), the forward pass against a float64 numpy
transcription of the equations, the causal mask, noise and dropout drawn from the per-row
keys (and nothing else), finite gradients."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import erf

from jaxrl_llm.models.reacritic import (
    CausalSelfAttention,
    DiscreteReaCriticEnsemble,
    ReaCritic,
    ReaCriticCore,
    ReaCriticEnsemble,
    ReaCriticValue,
    ReasoningBlock,
    row_uniforms,
)

B, OBS, ACT, WIDTH = 3, 5, 2, 8


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    obs = jnp.asarray(rng.normal(size=(B, OBS)), jnp.float32)
    action = jnp.asarray(rng.uniform(-1, 1, (B, ACT)), jnp.float32)
    return obs, action


def _keys(seed):
    return jax.random.split(jax.random.PRNGKey(seed), B)


def _jit(module):
    """`(init, apply)` of `module`, jitted: eager Flax dispatches op by op, which is slower."""
    return jax.jit(module.init), jax.jit(module.apply, static_argnames="deterministic")


def _changed_rows(a, b):
    return [i for i in range(a.shape[-1]) if not np.array_equal(np.asarray(a)[..., i], np.asarray(b)[..., i])]


@pytest.mark.parametrize("steps, depth", [(1, 0), (1, 2), (4, 0), (3, 1)])
def test_output_shapes(steps, depth):
    obs, action = _inputs()
    keys = _keys(0)
    settings = {"width": WIDTH, "num_steps": steps, "depth": depth}
    cases = [
        (ReaCritic(**settings), (obs, action), (B,)),
        (ReaCriticEnsemble(num_critics=2, **settings), (obs, action), (2, B)),
        (DiscreteReaCriticEnsemble(num_actions=4, num_critics=3, **settings), (obs,), (3, B, 4)),
        (ReaCriticValue(**settings), (obs[:, None, :],), (B,)),  # trailing obs axes are flattened
    ]
    for module, args, shape in cases:
        params = jax.eval_shape(module.init, jax.random.PRNGKey(1), *args, keys)
        chex.assert_shape(jax.eval_shape(module.apply, params, *args, keys), shape)
    # one of them run: the ensemble, which stacks K independent parameter sets
    init, apply = _jit(cases[1][0])
    params = init(jax.random.PRNGKey(1), obs, action, keys)
    chex.assert_tree_all_finite(apply(params, obs, action, keys))
    kernel = params["params"]["critics"]["embed"]["kernel"]
    chex.assert_shape(kernel, (2, OBS + ACT, WIDTH))
    assert not np.allclose(kernel[0], kernel[1])


# ----------------------------------------------------------------------- float64 reference


def _np_layer_norm(x, p, eps=1e-5):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def _np_dense(x, p):
    return x @ p["kernel"] + p["bias"]


def _np_reacritic(params, x, noise, num_heads=4):
    """The module docstring's equations, row by row in float64 (`noise`: sigma * eps, [B, H, h])."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params["params"])
    out = []
    for b in range(x.shape[0]):
        seq = _np_dense(x[b], p["embed"])[None, :] + p["step_embedding"] + noise[b]  # [H, h]
        steps, width = seq.shape
        d = width // num_heads
        for layer in range(sum(name.startswith("block") for name in p)):
            block = p[f"block{layer}"]
            h = _np_layer_norm(seq, block["ln1"])
            attn_p = block["attn"]
            q_all, k_all, v_all = np.split(h @ attn_p["qkv"]["kernel"], 3, axis=-1)
            q_all, v_all = q_all + attn_p["query_bias"], v_all + attn_p["value_bias"]
            heads = []
            for head in range(num_heads):
                cols = slice(head * d, (head + 1) * d)
                q, k, v = q_all[:, cols], k_all[:, cols], v_all[:, cols]
                attn = np.zeros((steps, d))
                for i in range(steps):  # step i attends to steps 0..i
                    logits = np.array([q[i] @ k[j] / np.sqrt(d) for j in range(i + 1)])
                    w = np.exp(logits - logits.max())
                    attn[i] = (w / w.sum()) @ v[: i + 1]
                heads.append(attn)
            seq = seq + _np_dense(np.concatenate(heads, -1), block["attn"]["proj"])
            h = _np_dense(_np_layer_norm(seq, block["ln2"]), block["mlp_in"])
            gelu = 0.5 * h * (1.0 + erf(h / np.sqrt(2.0)))
            seq = seq + _np_dense(gelu, block["mlp_out"])
        scores = (seq @ p["step_scores"]["kernel"])[:, 0]
        w = np.exp(scores - scores.max())
        pooled = (w / w.sum()) @ seq
        out.append(_np_dense(_np_layer_norm(pooled, p["ln_out"]), p["head"]))
    return np.stack(out)


@pytest.mark.parametrize("steps, depth, noise_std", [(1, 0, 0.0), (4, 2, 0.0), (3, 1, 0.3)])
def test_forward_matches_float64_equations(steps, depth, noise_std):
    obs, action = _inputs(1)
    x = jnp.concatenate([obs, action], -1)
    keys = _keys(2)
    core = ReaCriticCore(width=WIDTH, num_steps=steps, depth=depth, noise_std=noise_std, num_outputs=2)
    init, apply = _jit(core)
    params = init(jax.random.PRNGKey(3), x, keys)
    got = apply(params, x, keys, deterministic=True)
    # the noise of row b is sigma * jax.random.normal(keys[b]) reshaped [H, h]
    eps = jax.vmap(lambda k: jax.random.normal(k, (steps * WIDTH,)))(keys).reshape(B, steps, WIDTH)
    expected = _np_reacritic(params, np.asarray(x, np.float64), noise_std * np.asarray(eps, np.float64))
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=2e-5)


# ----------------------------------------------------------------------- causal mask


def test_attention_is_causal():
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.normal(size=(2, 6, WIDTH)), jnp.float32)
    later = x.at[:, 3].add(1.0)  # perturb step 3
    u = row_uniforms(jax.random.split(jax.random.PRNGKey(5), 2), ReasoningBlock().num_uniforms(6, WIDTH))
    for module, rand in [(CausalSelfAttention(), u[:, : 4 * 36]), (ReasoningBlock(), u)]:
        init, apply = _jit(module)
        params = init(jax.random.PRNGKey(6), x)
        for r in (None, rand):  # deterministic, and with the same dropout draws
            out, out_later = apply(params, x, r), apply(params, later, r)
            np.testing.assert_array_equal(out[:, :3], out_later[:, :3])  # steps 0..2 cannot see step 3
            assert not np.allclose(out[:, 3:], out_later[:, 3:])


# ----------------------------------------------------------------------- randomness from keys


def test_noise_and_dropout_follow_the_keys():
    obs, action = _inputs(2)
    critic = ReaCriticEnsemble(width=WIDTH, num_steps=4, depth=1)
    init, apply = _jit(critic)
    params = init(jax.random.PRNGKey(0), obs, action, _keys(0))
    q = lambda keys, **kw: apply(params, obs, action, keys, **kw)
    np.testing.assert_array_equal(q(_keys(1)), q(_keys(1)))  # same keys, same numbers
    assert _changed_rows(q(_keys(1)), q(_keys(2))) == [0, 1, 2]
    # a row's output depends on its own key only (why data-parallel runs match one device)
    keys = _keys(1)
    assert _changed_rows(q(keys), q(keys.at[1].set(_keys(9)[1]))) == [1]
    # noise alone (dropout off) and dropout alone (sigma 0) each follow the keys
    assert _changed_rows(q(_keys(1), deterministic=True), q(_keys(2), deterministic=True)) == [0, 1, 2]
    apply0 = _jit(ReaCriticEnsemble(width=WIDTH, num_steps=4, depth=1, noise_std=0.0))[1]
    q0 = lambda keys, **kw: apply0(params, obs, action, keys, **kw)
    assert _changed_rows(q0(_keys(1)), q0(_keys(2))) == [0, 1, 2]
    # sigma = 0 and deterministic: no randomness left, and no keys needed
    np.testing.assert_array_equal(q0(_keys(1), deterministic=True), q0(_keys(2), deterministic=True))
    np.testing.assert_array_equal(q0(None, deterministic=True), q0(_keys(2), deterministic=True))
    # the two critics of the ensemble draw different noise for the same row key
    shared = jax.tree.map(lambda p: jnp.stack([p[0], p[0]]), params)
    q_shared = apply(shared, obs, action, _keys(1))
    assert not np.allclose(q_shared[0], q_shared[1])
    q0_shared = apply0(shared, obs, action, None, deterministic=True)
    np.testing.assert_array_equal(q0_shared[0], q0_shared[1])


def test_noise_is_standard_normal_and_dropout_keeps_90_percent():
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    u = row_uniforms(keys, 20_000)
    # the noise map is jax.random.normal's: sqrt(2) erfinv(u) with the same uniforms
    from jaxrl_llm.models.reacritic import _dropout, _gaussian

    np.testing.assert_allclose(
        _gaussian(u), jax.vmap(lambda k: jax.random.normal(k, (20_000,)))(keys), rtol=1e-6, atol=1e-6
    )
    x = jnp.ones((4, 20_000))
    kept = np.asarray(_dropout(x, 0.1, u))
    assert set(np.unique(kept)) == {0.0, np.float32(1 / 0.9)}
    assert abs((kept > 0).mean() - 0.9) < 0.01


def test_missing_or_misshapen_keys_are_refused():
    obs, action = _inputs()
    critic = ReaCritic(width=WIDTH, num_steps=2, depth=1)
    params = jax.eval_shape(critic.init, jax.random.PRNGKey(0), obs, action, _keys(0))
    with pytest.raises(ValueError, match="needs keys: one PRNG key per batch row"):
        jax.eval_shape(critic.apply, params, obs, action, None)
    with pytest.raises(ValueError, match="keys have 2 rows, the batch has 3"):
        jax.eval_shape(critic.apply, params, obs, action, _keys(0)[:2])


def test_gradients_are_finite_and_reach_every_parameter():
    obs, action = _inputs(3)
    critic = ReaCriticEnsemble(width=WIDTH, num_steps=4, depth=2)
    params = jax.jit(critic.init)(jax.random.PRNGKey(0), obs, action, _keys(0))

    @jax.jit
    def grads(params, action, keys):
        return jax.grad(lambda p, a: (critic.apply(p, obs, a, keys) ** 2).sum(), argnums=(0, 1))(
            params, action
        )

    g_params, g_action = grads(params, action, _keys(1))
    chex.assert_tree_all_finite((g_params, g_action))
    assert all(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(g_params))
    assert float(jnp.abs(g_action).max()) > 0  # the actor's gradient path through Q(s, a)
