"""HetNet-v0: downlink user association and resource sharing in a two-tier cellular network.

A real version of the HetNet resource-allocation task of ReaCritic (You & Du, arXiv
2505.10992), whose released environment is a template with a random reward. One macro base
station (MBS, cell 0) sits at the centre of a square of side `area_side_m`; `S` small cells
(SBS, cells 1..S) and `K` users are placed uniformly at random in the square at every reset
and do not move during the episode. Every step the agent chooses, for every user, its serving
cell and its share of that cell's band; the reward is the proportional-fairness utility of
the resulting Shannon rates minus a penalty for users below their demand.

Channel, per user k and cell j (`C = S + 1` cells; 2-D distances; all numbers are
`EnvParams` fields, defaults in brackets):

  path loss   PL_kj = PL0_j + 10 n_j log10(max(d_kj, d_min_j) / d0)                       [dB]
              MBS: PL0 = 128.1 dB, n = 3.76, d_min = 35 m; SBS: PL0 = 140.7 dB, n = 3.67,
              d_min = 10 m; d0 = 1 km. These are the macro and pico path-loss models
              (128.1 + 37.6 log10 R and 140.7 + 36.7 log10 R, R in km, ~2 GHz) with their
              minimum distances of 3GPP TR 36.814 (v9.0.0), Annex A.2.1.1 (HetNet/pico
              simulation assumptions), as quoted throughout the HetNet literature (the
              spec text itself was not re-read here). Closer links are clamped to d_min
              (not redrawn).
  shadowing   X_kj ~ N(0, sigma_j^2), sigma = 8 dB (MBS) / 10 dB (SBS) as in TR 36.814,
              independent per link, drawn at reset and fixed for the episode            [dB]
  fading      |h_kj|^2 with E|h|^2 = 1, redrawn i.i.d. at every step (block fading):
              Rician (default): h = sqrt(K_R/(K_R+1)) + sqrt(1/(K_R+1)) g, g ~ CN(0, 1),
              K-factor K_R = `rician_k` = 2 (linear; ReaCritic's template uses 2);
              Rayleigh (`fading="rayleigh"`): h = g, i.e. |h|^2 ~ Exp(1).
  gain        G_kj = 10^(-(PL_kj + X_kj)/10) |h_kj|^2                                      [1]
  tx power    P_0 = 46 dBm (MBS), P_j = 30 dBm (SBS), spread evenly over the band (TR 36.814
              values for a 10 MHz carrier); no antenna gains.
  noise       N = -174 dBm/Hz + NF + 10 log10(B), NF = 9 dB (UE), B = 10 MHz: -95 dBm.

Action (Box `[-1, 1]^(K (S+2))`, clipped into the box; row-major `[K, S+2]`: user k's row
is `S+1` association scores then one share value):

  association  c_k = argmax_j score_kj (ties go to the lowest index, the MBS first)
  weights      v_k = (a_k + 1) / 2 in [0, 1]
  shares       w_k = v_k / max(1, sum_{i: c_i = c_k} v_i), so each cell's shares sum to <= 1
  cell load    rho_j = sum_{k: c_k = j} w_k in [0, 1] (0 for a cell serving nobody)

A user gets the fraction w_k of its cell's band and of its cell's transmit power (constant
power spectral density), orthogonal to the other users of that cell (OFDMA). Interference
model: full frequency reuse (every cell uses the same band B), and each other cell j
transmits on a given frequency with probability rho_j (its resource blocks are placed at
random in the band), so the mean interference on user k's band is sum_j rho_j P_j G_kj,
which is what the environment uses (no random collision draw): the SINR of the
load-coupling model of LTE network planning (I. Siomina and D. Yuan, "Analysis of cell
load coupling for LTE network planning and optimization", IEEE Trans. Wireless Commun.
11(6):2287-2297, 2012, arXiv:1201.4116), here with loads set by the action rather than
solved for. As w_k scales signal, interference and noise alike, it cancels in the SINR:

  SINR_k = P_{c_k} G_{k c_k} / (sum_{j != c_k} rho_j P_j G_kj + N)
  rate_k = w_k B log2(1 + SINR_k) / 1e6                                        [Mbit/s]
  reward = sum_k log(1 + rate_k) - penalty * #{k : rate_k < demand_k}

(Shannon capacity of an AWGN channel with interference treated as noise; the log utility
is proportional fairness.) Demands are drawn at reset, uniform in
`[demand_min_mbps, demand_max_mbps]` = [0.5, 2] Mbit/s, and penalty = 1 per user. The rates
use the fading in the state, the same that the observation showed; the step then draws the
next fading. Nothing terminates; episodes are truncated after `max_steps_in_episode` = 100
steps.

Observation: float32 `[K (S+3)]`, concatenated in this order:
  `[K*(S+1)]` channel gains 10 log10 G_kj, user-major, normalised as
              (G_dB - obs_gain_mean_db) / obs_gain_scale_db = (G_dB + 100) / 20;
  `[K]`       demands / obs_rate_scale_mbps (10 Mbit/s);
  `[K]`       last step's rates / obs_rate_scale_mbps (0 after a reset).
Transmit powers and noise are constants, so the gains determine every SINR.

Info: `rate_mbps`, `sinr_db`, `share` (w), `association` (int32) and `unmet_demand` (bool),
each `[K]`, and `load` `[S+1]`, all for the step's action.

Defaults: `K = 20` users (ReaCritic's figure), `S = 4` small cells, a 500 m square. Under
them (one step from each of 512 resets), max-received-power association with equal shares
earned 37.8 per step on average (median SINR 26 dB, median rate 5.8 Mbit/s, 4% of users
below demand; about half the small cells then serve nobody, the 46 dBm macro being the
strongest cell for most users) and uniformly random actions -5.0 (79% below demand).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces

__all__ = [
    "FADING_MODELS",
    "EnvParams",
    "EnvState",
    "HetNet",
    "cell_loads",
    "decode_action",
    "draw_fading_power",
    "fading_power",
    "link_path_loss_db",
    "link_snr",
    "noise_power_dbm",
    "path_loss_db",
    "proportional_fair_reward",
    "shannon_rate_mbps",
    "sinr",
    "tx_power_dbm",
]

FADING_MODELS = ("rician", "rayleigh")
# Floor of |h|^2 in the observation's dB values (an exact zero would give -inf).
_MIN_FADING_POWER = 1e-12


@struct.dataclass
class EnvState(environment.EnvState):
    """Positions (metres, origin at the MBS), the channel and the demands of one episode."""

    user_positions: jax.Array  # [K, 2] float32
    cell_positions: jax.Array  # [S+1, 2] float32, row 0 the MBS at (0, 0)
    shadowing_db: jax.Array  # [K, S+1] float32, fixed for the episode
    fading_power: jax.Array  # [K, S+1] float32 |h|^2, redrawn every step
    demand_mbps: jax.Array  # [K] float32
    last_rate_mbps: jax.Array  # [K] float32, the previous step's rates (0 after a reset)


@struct.dataclass
class EnvParams(environment.EnvParams):
    """Physical constants and reward terms; see the module docstring for their sources."""

    max_steps_in_episode: int = 100
    area_side_m: float = 500.0
    # Transmit powers over the whole band.
    macro_tx_power_dbm: float = 46.0
    small_tx_power_dbm: float = 30.0
    # PL(d) = PL0 + 10 n log10(max(d, d_min) / d0).
    macro_pl0_db: float = 128.1
    macro_pl_exponent: float = 3.76
    small_pl0_db: float = 140.7
    small_pl_exponent: float = 3.67
    pl_reference_distance_m: float = 1000.0
    macro_min_distance_m: float = 35.0
    small_min_distance_m: float = 10.0
    # Log-normal shadowing standard deviations.
    macro_shadowing_std_db: float = 8.0
    small_shadowing_std_db: float = 10.0
    rician_k: float = 2.0  # linear K-factor (LOS / scattered power); unused for Rayleigh
    bandwidth_hz: float = 10e6
    noise_psd_dbm_per_hz: float = -174.0
    noise_figure_db: float = 9.0
    demand_min_mbps: float = 0.5
    demand_max_mbps: float = 2.0
    outage_penalty: float = 1.0  # per user whose rate is below its demand
    obs_gain_mean_db: float = -100.0
    obs_gain_scale_db: float = 20.0
    obs_rate_scale_mbps: float = 10.0


# --------------------------------------------------------------------------- channel


def path_loss_db(distance_m: jax.Array, pl0_db, exponent, reference_m) -> jax.Array:
    """Log-distance path loss `PL(d) = PL0 + 10 n log10(d / d0)` in dB."""
    return pl0_db + 10.0 * exponent * jnp.log10(distance_m / reference_m)


def tx_power_dbm(num_cells: int, params: EnvParams) -> jax.Array:
    """`[C]` transmit powers in dBm: the MBS first, then the `C - 1` small cells."""
    is_macro = jnp.arange(num_cells) == 0
    return jnp.where(is_macro, params.macro_tx_power_dbm, params.small_tx_power_dbm).astype(jnp.float32)


def noise_power_dbm(params: EnvParams) -> jax.Array:
    """Thermal noise over the band, `N = N0 + NF + 10 log10(B)` in dBm."""
    return params.noise_psd_dbm_per_hz + params.noise_figure_db + 10.0 * jnp.log10(params.bandwidth_hz)


def link_path_loss_db(user_positions: jax.Array, cell_positions: jax.Array, params: EnvParams) -> jax.Array:
    """`[K, C]` path loss in dB between users `[K, 2]` and cells `[C, 2]` (cell 0 the MBS).

    Macro constants for column 0, small-cell constants for the others; distances below
    the tier's minimum distance are clamped to it.
    """
    distance = jnp.linalg.norm(user_positions[:, None, :] - cell_positions[None, :, :], axis=-1)
    is_macro = jnp.arange(cell_positions.shape[0]) == 0
    min_distance = jnp.where(is_macro, params.macro_min_distance_m, params.small_min_distance_m)
    pl0 = jnp.where(is_macro, params.macro_pl0_db, params.small_pl0_db)
    exponent = jnp.where(is_macro, params.macro_pl_exponent, params.small_pl_exponent)
    return path_loss_db(
        jnp.maximum(distance, min_distance), pl0, exponent, params.pl_reference_distance_m
    ).astype(jnp.float32)


def fading_power(real: jax.Array, imag: jax.Array, rician_k) -> jax.Array:
    """`|h|^2` from standard normals: `h = sqrt(K/(K+1)) + sqrt(1/(K+1)) g`, `g = (real + j imag)/sqrt(2)`.

    `g ~ CN(0, 1)`, so `E|h|^2 = 1` and `Var|h|^2 = (2K + 1) / (K + 1)^2`: Rician with
    K-factor `K` (linear; the LOS phase is irrelevant to `|h|^2`), Rayleigh for `K = 0`.
    """
    k = jnp.asarray(rician_k, jnp.float32)
    los = jnp.sqrt(k / (k + 1.0))
    scatter = jnp.sqrt(0.5 / (k + 1.0))  # per real dimension
    return (los + scatter * real) ** 2 + (scatter * imag) ** 2


def draw_fading_power(key: jax.Array, shape: tuple[int, ...], rician_k) -> jax.Array:
    """Small-scale power gains `|h|^2` of shape `shape`, i.i.d. as in `fading_power`."""
    # Drawn flat and reshaped: a multi-dimensional draw compiled ~5x slower on XLA:CPU.
    real, imag = jax.random.normal(key, (2 * math.prod(shape),), jnp.float32).reshape(2, *shape)
    return fading_power(real, imag, rician_k)


def link_snr(state: EnvState, params: EnvParams) -> jax.Array:
    """`[K, C]` linear `P_j G_kj / N`: user k's SNR from cell j alone (the state's fading)."""
    loss_db = link_path_loss_db(state.user_positions, state.cell_positions, params) + state.shadowing_db
    num_cells = state.cell_positions.shape[0]
    snr_db = tx_power_dbm(num_cells, params)[None, :] - loss_db - noise_power_dbm(params)
    return jnp.power(10.0, snr_db / 10.0) * state.fading_power


# --------------------------------------------------------------------------- action and rates


def decode_action(action: jax.Array, num_users: int, num_cells: int) -> tuple[jax.Array, jax.Array]:
    """Clipped action `[K (C+1)]` (or `[K, C+1]`) -> association `[K]` int32, weights `[K]`.

    Association is the argmax of the `C` scores (lowest index on ties); the weight is the
    last value mapped from `[-1, 1]` to `[0, 1]`.
    """
    action = jnp.clip(jnp.reshape(jnp.asarray(action, jnp.float32), (num_users, num_cells + 1)), -1.0, 1.0)
    association = jnp.argmax(action[:, :num_cells], axis=-1).astype(jnp.int32)
    return association, 0.5 * (action[:, num_cells] + 1.0)


def cell_loads(association: jax.Array, weights: jax.Array, num_cells: int) -> tuple[jax.Array, jax.Array]:
    """Shares `w_k = v_k / max(1, sum_{i in c_k} v_i)` `[K]` and loads `rho_j = sum_{k in j} w_k` `[C]`."""
    members = association[:, None] == jnp.arange(num_cells)[None, :]  # [K, C]
    weight_sums = jnp.sum(jnp.where(members, weights[:, None], 0.0), axis=0)
    shares = weights / jnp.maximum(1.0, weight_sums[association])
    return shares, jnp.sum(jnp.where(members, shares[:, None], 0.0), axis=0)


def sinr(snr: jax.Array, association: jax.Array, load: jax.Array) -> jax.Array:
    """`[K]` `SINR_k = snr_{k c_k} / (sum_{j != c_k} rho_j snr_kj + 1)` from `[K, C]` SNRs."""
    is_serving = jnp.arange(snr.shape[1])[None, :] == association[:, None]
    serving = jnp.sum(jnp.where(is_serving, snr, 0.0), axis=1)
    interference = jnp.sum(jnp.where(is_serving, 0.0, snr * load[None, :]), axis=1)
    return serving / (interference + 1.0)


def shannon_rate_mbps(share: jax.Array, sinr_k: jax.Array, bandwidth_hz) -> jax.Array:
    """`rate = w B log2(1 + SINR) / 1e6` in Mbit/s."""
    return share * (bandwidth_hz / 1e6) * jnp.log1p(sinr_k) / math.log(2.0)


def proportional_fair_reward(rate_mbps: jax.Array, demand_mbps: jax.Array, penalty) -> jax.Array:
    """`sum_k log(1 + rate_k) - penalty * #{k : rate_k < demand_k}` (rates in Mbit/s)."""
    unmet = (rate_mbps < demand_mbps).astype(jnp.float32)
    return jnp.sum(jnp.log1p(rate_mbps)) - penalty * jnp.sum(unmet)


# --------------------------------------------------------------------------- environment


class HetNet(environment.Environment[EnvState, EnvParams]):
    """Two-tier HetNet user association and band sharing; see the module docstring.

    Args:
      num_users: K, the number of users (>= 1).
      num_small_cells: S, the number of small cells (>= 0) besides the macro cell.
      fading: "rician" (K-factor `EnvParams.rician_k`) or "rayleigh".
    """

    def __init__(self, num_users: int = 20, num_small_cells: int = 4, fading: str = "rician"):
        if int(num_users) != num_users or num_users < 1:
            raise ValueError(f"HetNet: num_users={num_users!r} is invalid: must be an int >= 1.")
        if int(num_small_cells) != num_small_cells or num_small_cells < 0:
            raise ValueError(f"HetNet: num_small_cells={num_small_cells!r} is invalid: must be an int >= 0.")
        if fading not in FADING_MODELS:
            raise ValueError(f"HetNet: fading={fading!r} is invalid: must be one of {FADING_MODELS}.")
        self.num_users = int(num_users)
        self.num_small_cells = int(num_small_cells)
        self.num_cells = self.num_small_cells + 1
        self.fading = fading

    @property
    def default_params(self) -> EnvParams:
        return EnvParams()

    @property
    def name(self) -> str:
        return "HetNet-v0"

    @property
    def num_actions(self) -> int:
        """Action dimension `K (S+2)` (as gymnax's continuous environments report it)."""
        return self.num_users * (self.num_cells + 1)

    def _rician_k(self, params: EnvParams):
        return params.rician_k if self.fading == "rician" else 0.0

    def _link_shape(self) -> tuple[int, int]:
        return (self.num_users, self.num_cells)

    def step_env(
        self, key: jax.Array, state: EnvState, action: jax.Array, params: EnvParams
    ) -> tuple[jax.Array, EnvState, jax.Array, jax.Array, dict[str, Any]]:
        association, weights = decode_action(action, self.num_users, self.num_cells)
        shares, load = cell_loads(association, weights, self.num_cells)
        sinr_k = sinr(link_snr(state, params), association, load)
        rate = shannon_rate_mbps(shares, sinr_k, params.bandwidth_hz)
        reward = proportional_fair_reward(rate, state.demand_mbps, params.outage_penalty)
        state = state.replace(
            time=state.time + 1,
            fading_power=draw_fading_power(key, self._link_shape(), self._rician_k(params)),
            last_rate_mbps=rate,
        )
        info = {
            "rate_mbps": rate,
            "sinr_db": 10.0 * jnp.log10(sinr_k),
            "share": shares,
            "association": association,
            "load": load,
            "unmet_demand": rate < state.demand_mbps,
        }
        obs = self.observe(key, state, action, params)
        return obs, state, reward.astype(jnp.float32), jnp.array(False), info

    def reset_env(self, key: jax.Array, params: EnvParams) -> tuple[jax.Array, EnvState]:
        # One flat PRNG draw (each draw adds ~0.5 s of XLA:CPU compile time, a multi-dimensional
        # one several seconds under vmap): uniforms for the positions and demands, standard
        # normals for shadowing and fading by the inverse normal CDF.
        num_users, num_small, links = self.num_users, self.num_small_cells, self._link_shape()
        num_positions, num_links = 2 * (num_users + num_small), links[0] * links[1]
        tiny = jnp.finfo(jnp.float32).tiny  # keeps the normals finite
        uniforms = jax.random.uniform(
            key, (num_positions + num_users + 3 * num_links,), jnp.float32, tiny, 1.0
        )
        positions = params.area_side_m * (uniforms[:num_positions] - 0.5)
        demand = (
            params.demand_min_mbps
            + (params.demand_max_mbps - params.demand_min_mbps)
            * uniforms[num_positions : num_positions + num_users]
        )
        normals = jnp.sqrt(2.0) * jax.lax.erf_inv(2.0 * uniforms[num_positions + num_users :] - 1.0)
        shadowing, real, imag = normals.reshape(3, *links)
        is_macro = jnp.arange(self.num_cells) == 0
        shadowing_std = jnp.where(is_macro, params.macro_shadowing_std_db, params.small_shadowing_std_db)
        state = EnvState(
            time=jnp.array(0, jnp.int32),
            user_positions=positions[: 2 * num_users].reshape(num_users, 2),
            cell_positions=jnp.concatenate(
                [jnp.zeros((1, 2), jnp.float32), positions[2 * num_users :].reshape(num_small, 2)]
            ),
            shadowing_db=shadowing_std * shadowing,
            fading_power=fading_power(real, imag, self._rician_k(params)),
            demand_mbps=demand,
            last_rate_mbps=jnp.zeros(num_users, jnp.float32),
        )
        return self.observe(key, state, None, params), state

    def is_terminated(self, state: EnvState, params: EnvParams) -> jax.Array:
        del state, params
        return jnp.array(False)

    def channel_gain_db(self, state: EnvState, params: EnvParams) -> jax.Array:
        """`[K, S+1]` `10 log10 G_kj = -(PL_kj + X_kj) + 10 log10 |h_kj|^2` in dB."""
        loss_db = link_path_loss_db(state.user_positions, state.cell_positions, params) + state.shadowing_db
        return -loss_db + 10.0 * jnp.log10(jnp.maximum(state.fading_power, _MIN_FADING_POWER))

    def observe(self, key, state: EnvState, action, params: EnvParams) -> jax.Array:
        """float32 `[K (S+3)]`: normalised gains `[K*(S+1)]`, demands `[K]`, last rates `[K]`."""
        del key, action
        gains = (self.channel_gain_db(state, params) - params.obs_gain_mean_db) / params.obs_gain_scale_db
        return jnp.concatenate(
            [
                gains.reshape(-1),
                state.demand_mbps / params.obs_rate_scale_mbps,
                state.last_rate_mbps / params.obs_rate_scale_mbps,
            ]
        ).astype(jnp.float32)

    def action_space(self, params: EnvParams | None = None) -> spaces.Box:
        return spaces.Box(-1.0, 1.0, (self.num_actions,), jnp.float32)

    def observation_space(self, params: EnvParams) -> spaces.Box:
        return spaces.Box(-jnp.inf, jnp.inf, (self.num_users * (self.num_cells + 2),), jnp.float32)

    def state_space(self, params: EnvParams) -> spaces.Dict:
        half = 0.5 * params.area_side_m
        links = self._link_shape()
        return spaces.Dict(
            {
                "time": spaces.Discrete(params.max_steps_in_episode + 1),
                "user_positions": spaces.Box(-half, half, (self.num_users, 2), jnp.float32),
                "cell_positions": spaces.Box(-half, half, (self.num_cells, 2), jnp.float32),
                "shadowing_db": spaces.Box(-jnp.inf, jnp.inf, links, jnp.float32),
                "fading_power": spaces.Box(0.0, jnp.inf, links, jnp.float32),
                "demand_mbps": spaces.Box(
                    params.demand_min_mbps, params.demand_max_mbps, (self.num_users,), jnp.float32
                ),
                "last_rate_mbps": spaces.Box(0.0, jnp.inf, (self.num_users,), jnp.float32),
            }
        )
