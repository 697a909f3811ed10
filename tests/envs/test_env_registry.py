"""Registration: our ids build through both `jaxrl_llm.envs.make` and `gymnax.make`."""

import gymnax
import pytest

import jaxrl_llm.envs as envs

OUR_IDS = ["Maze-v0", "MiniBehavior-PickPlace-v0", "CliffWalking-v0", "FrozenLakeRandom-v0"]


@pytest.mark.parametrize("env_id", OUR_IDS)
def test_make_through_both_registries(env_id):
    env, params = envs.make(env_id)
    gymnax_env, gymnax_params = gymnax.make(env_id)
    assert type(env) is type(gymnax_env) and params == gymnax_params
    assert env.name == env_id and env_id in envs.registered_envs()
    assert env.action_space(params).n == env.num_actions
    assert "time" in env.state_space(params).spaces


def test_kwargs_reach_the_constructor():
    env, params = envs.make("Maze-v0", size=5)
    assert env.observation_space(params).shape == (75,) and params.max_steps_in_episode == 100
    env, params = envs.make("FrozenLakeRandom-v0", size=8, hole_probability=0.1)
    assert env.observation_space(params).shape == (192,) and params.max_steps_in_episode == 200


def test_registering_again_is_harmless():
    envs.register("Maze-v0", envs.Maze)
    assert envs.registered_envs().count("Maze-v0") == 1


@pytest.mark.parametrize(
    "typo, suggestion",
    [
        ("Maze-v1", "Maze-v0"),
        ("MiniBehavior-PickPlace-v1", "MiniBehavior-PickPlace-v0"),
        ("CliffWalking", "CliffWalking-v0"),
    ],
)
def test_unknown_id_suggests_close_names(typo, suggestion):
    with pytest.raises(ValueError, match=suggestion):
        envs.make(typo)


def test_command_line_strings_are_converted_to_the_constructor_types():
    env, _ = envs.make("FrozenLake-misc", is_slippery="false", success_rate="0.5", map_name="8x8")
    assert env.is_slippery is False and env.success_rate == 0.5
    env, _ = envs.make("FrozenLake-misc", is_slippery=0, success_rate=1)
    assert env.is_slippery is False and isinstance(env.success_rate, float)
    env, params = envs.make("Maze-v0", size="5")
    assert env.observation_space(params).shape == (75,)


@pytest.mark.parametrize(
    "env_id, kwargs, message",
    [
        ("FrozenLake-misc", {"size": 4}, r"does not take --env-kwargs size\. It accepts .*is_slippery=True"),
        ("CartPole-v1", {"size": 4}, r"does not take --env-kwargs size\. It accepts \(with defaults\): none"),
        ("FrozenLake-misc", {"is_slippery": "maybe"}, r"is_slippery='maybe' is not a valid bool"),
        ("Maze-v0", {"size": 4.5}, r"size=4.5 is not a valid int"),
        (
            "FrozenLakeRandom-v0",
            {"hole_probability": "many"},
            r"hole_probability='many' is not a valid float",
        ),
    ],
)
def test_bad_env_kwargs_say_what_is_accepted(env_id, kwargs, message):
    with pytest.raises(ValueError, match=message):
        envs.make(env_id, **kwargs)
