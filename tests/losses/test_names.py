"""The JAX-free option names: lazy `jaxrl_llm.losses`, and config choices equal to what the losses accept."""

import subprocess
import sys

from absl.testing import absltest
import jax.numpy as jnp
import numpy as np

from jaxrl_llm.algorithms.configs.group_rl import GroupRLConfig
from jaxrl_llm.algorithms.configs.lm_grpo import LMGRPOConfig
from jaxrl_llm.losses import gigpo, group_advantages as group_advantages_function, kl, names, policy_gradient
from jaxrl_llm.losses.gigpo import gigpo_advantages
from jaxrl_llm.losses.group_advantages import group_advantages
from jaxrl_llm.losses.kl import kl_divergence_estimate
from jaxrl_llm.losses.policy_gradient import aggregate_loss

# Every option name any loss or config knows, plus names that nothing should accept.
CANDIDATES = sorted(
    set(names.LOSS_AGG_MODES)
    | set(names.KL_ESTIMATOR_NAMES)
    | set(names.GROUP_NORMALIZATIONS)
    | set(names.GIGPO_NORMALIZATIONS)
    | {"token-sum", "seq-mean", "k4", "mean_std_norm", "global", "Group", ""}
)


def run_python(code):
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return result.stdout.strip()


def accepts(function, value):
    try:
        function(value)
    except ValueError:
        return False
    return True


def config_accepts(config_class, field, value):
    return accepts(lambda v: config_class(**{field: v}), value)


def loss_agg_mode_accepted(mode):
    aggregate_loss(jnp.zeros((1, 2)), jnp.ones((1, 2)), mode)


def kl_estimator_accepted(estimator):
    kl_divergence_estimate(jnp.zeros(2), jnp.zeros(2), estimator)


def group_normalization_accepted(normalization):
    group_advantages(jnp.zeros(2), jnp.zeros(2, jnp.int32), normalization=normalization)


def gigpo_normalization_accepted(normalization):
    gigpo_advantages(
        jnp.zeros((2, 2)),
        jnp.ones((2, 2), bool),
        jnp.zeros(2, jnp.int32),
        jnp.zeros((2, 2), jnp.int32),
        normalization=normalization,
    )


class JaxFreeImportTest(absltest.TestCase):
    def test_configs_and_names_import_no_jax(self):
        imported = run_python(
            "import sys\n"
            "import jaxrl_llm.algorithms.configs.lm_grpo, jaxrl_llm.algorithms.configs.group_rl\n"
            "from jaxrl_llm.losses.names import LOSS_AGG_MODES\n"
            "import jaxrl_llm.losses\n"
            "print(sorted(m for m in ('jax', 'jaxlib', 'chex', 'flax') if m in sys.modules))"
        )
        self.assertEqual(imported, "[]")

    def test_lazy_package_exports_every_name(self):
        out = run_python(
            "import sys, jaxrl_llm.losses as losses\n"
            "assert 'jax' not in sys.modules\n"
            "from jaxrl_llm.losses import ppo_loss\n"
            "assert 'jax' in sys.modules and callable(ppo_loss)\n"
            "missing = [n for n in losses.__all__ if getattr(losses, n, None) is None]\n"
            "assert not missing and set(losses.__all__) <= set(dir(losses)), missing\n"
            "try:\n"
            "    losses.no_such_loss\n"
            "except AttributeError as error:\n"
            "    print(error)\n"
        )
        self.assertIn("no_such_loss", out)

    def test_function_named_like_its_submodule_stays_the_function(self):
        # Importing the submodule `group_advantages` first must not shadow the function.
        out = run_python(
            "import jaxrl_llm.losses.group_advantages\n"
            "from jaxrl_llm.losses import group_advantages\n"
            "from jaxrl_llm.losses.group_advantages import group_advantages_dense\n"
            "print(type(group_advantages).__name__, group_advantages.__module__)"
        )
        self.assertEqual(out, "function jaxrl_llm.losses.group_advantages")
        self.assertIs(group_advantages_function, group_advantages)


class ChoicesTest(absltest.TestCase):
    def test_loss_modules_validate_against_the_names(self):
        self.assertIs(policy_gradient.LOSS_AGG_MODES, names.LOSS_AGG_MODES)
        self.assertIs(policy_gradient.IMPORTANCE_SAMPLING_LEVELS, names.IMPORTANCE_SAMPLING_LEVELS)
        self.assertIs(gigpo.NORMALIZATIONS, names.GIGPO_NORMALIZATIONS)
        self.assertIs(gigpo.EPISODE_BASELINES, names.GIGPO_EPISODE_BASELINES)
        self.assertIs(kl.KL_ESTIMATORS, names.KL_ESTIMATORS)
        for name in CANDIDATES:
            self.assertEqual(accepts(loss_agg_mode_accepted, name), name in names.LOSS_AGG_MODES, name)
            self.assertEqual(accepts(kl_estimator_accepted, name), name in names.KL_ESTIMATOR_NAMES, name)
            self.assertEqual(
                accepts(group_normalization_accepted, name), name in names.GROUP_NORMALIZATIONS, name
            )
            self.assertEqual(
                accepts(gigpo_normalization_accepted, name), name in names.GIGPO_NORMALIZATIONS, name
            )

    def test_aliases_are_the_canonical_estimators(self):
        rng = np.random.default_rng(0)
        logp, ref_logp = rng.normal(size=(2, 5)).astype(np.float32)
        for alias, canonical in names.KL_ESTIMATOR_ALIASES.items():
            self.assertIn(canonical, names.KL_ESTIMATORS)
            np.testing.assert_array_equal(
                kl_divergence_estimate(logp, ref_logp, alias),
                kl_divergence_estimate(logp, ref_logp, canonical),
            )

    def test_lm_grpo_config_accepts_exactly_what_its_losses_accept(self):
        for name in CANDIDATES:
            self.assertEqual(
                config_accepts(LMGRPOConfig, "loss_agg_mode", name),
                accepts(loss_agg_mode_accepted, name),
                name,
            )
            self.assertEqual(
                config_accepts(LMGRPOConfig, "kl_estimator", name), accepts(kl_estimator_accepted, name), name
            )
            self.assertEqual(
                config_accepts(LMGRPOConfig, "normalization", name),
                accepts(group_normalization_accepted, name),
                name,
            )

    def test_group_rl_config_accepts_what_both_of_its_algorithms_accept(self):
        # GroupRLConfig.normalization drives group_advantages (GRPO) and, translated by
        # GROUP_TO_GIGPO_NORMALIZATION, gigpo_advantages (GiGPO): it accepts what both accept.
        for name in CANDIDATES:
            self.assertEqual(
                config_accepts(GroupRLConfig, "loss_agg_mode", name),
                accepts(loss_agg_mode_accepted, name),
                name,
            )
            both = (
                accepts(group_normalization_accepted, name)
                and name in names.GROUP_TO_GIGPO_NORMALIZATION
                and accepts(gigpo_normalization_accepted, names.GROUP_TO_GIGPO_NORMALIZATION[name])
            )
            self.assertEqual(config_accepts(GroupRLConfig, "normalization", name), both, name)
        self.assertEqual(tuple(names.GROUP_TO_GIGPO_NORMALIZATION), ("group", "none"))


if __name__ == "__main__":
    absltest.main()
