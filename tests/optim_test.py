"""Tests for flip_jax.optim: schedules, torch parity, groups, freeze, decay."""
import math

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import optax
import pytest

from flip_jax import optim
from flip_jax.train import state as state_lib


def _cfg(**kw):
  base = dict(name="adamw", lr=1e-3, weight_decay=0.0, b1=0.9, b2=0.999,
              eps=1e-8, decay_mask="all", grad_clip=None, param_groups=[],
              freeze=[], schedule=dict(name="constant"))
  base.update(kw)
  return mlc.ConfigDict(base)


def _sched(name, lr=1e-4, spe=10, total=110, **kw):
  return optim.make_schedule(mlc.ConfigDict(dict(name=name, **kw)),
                             base_lr=lr, steps_per_epoch=spe,
                             total_steps=total)


def _at(sched, step):
  return float(sched(jnp.asarray(step)))


def _run(cfg, params, grads_seq, spe=1, total=100):
  tx = optim.build_optimizer(cfg, steps_per_epoch=spe, total_steps=total)
  st = state_lib.create_train_state(params, tx, jax.random.key(0))
  step = jax.jit(state_lib.apply_gradients)
  for g in grads_seq:
    st = step(st, g)
  return st


# ---------------------------------------------------------------- schedules

def test_cosine_epoch_matches_flip_values():
  s = _sched("cosine_epoch", lr=1e-4, spe=10, epochs=30)
  assert _at(s, 0) == pytest.approx(1e-4, rel=1e-6)
  assert _at(s, 9) == pytest.approx(1e-4, rel=1e-6)  # still epoch 0
  assert _at(s, 150) == pytest.approx(5e-5, rel=1e-5)  # epoch 15
  assert _at(s, 159) == pytest.approx(5e-5, rel=1e-5)
  assert _at(s, 290) == pytest.approx(2.7e-7, rel=0.02)  # epoch 29
  assert _at(s, 290) == pytest.approx(
      1e-4 * 0.5 * (1 + math.cos(math.pi * 29 / 30)), rel=1e-4)
  assert _at(s, 300) == pytest.approx(0.0, abs=1e-12)
  assert _at(s, 10_000) == pytest.approx(0.0, abs=1e-12)  # clamped, no rise


def test_step_schedules():
  assert _at(_sched("constant", lr=3e-4), 12345) == pytest.approx(3e-4)
  s = _sched("cosine", lr=1.0, total=110, warmup_steps=10)
  for step, want in [(0, 0.0), (5, 0.5), (10, 1.0), (60, 0.5), (110, 0.0)]:
    assert _at(s, step) == pytest.approx(want, abs=1e-6), step
  s = _sched("cosine", lr=1.0, total=100, warmup_steps=0)
  assert _at(s, 0) == pytest.approx(1.0)
  assert _at(s, 50) == pytest.approx(0.5, abs=1e-6)
  s = _sched("linear_warmup_cosine", lr=1.0, total=110, warmup_steps=10,
             min_lr_ratio=0.1)
  for step, want in [(0, 0.0), (10, 1.0), (60, 0.55), (110, 0.1)]:
    assert _at(s, step) == pytest.approx(want, abs=1e-6), step


def test_schedule_errors():
  with pytest.raises(ValueError, match="schedule name 'cosin' unknown"):
    _sched("cosin")
  with pytest.raises(KeyError, match="'epochs' is missing"):
    _sched("cosine_epoch")
  with pytest.raises(KeyError, match="'min_lr_ratio' is missing"):
    _sched("linear_warmup_cosine", warmup_steps=3)
  with pytest.raises(ValueError, match="warmup_steps must be >= 1"):
    _sched("linear_warmup_cosine", warmup_steps=0, min_lr_ratio=0.0)
  with pytest.raises(ValueError, match="must exceed warmup_steps"):
    _sched("cosine", total=5, warmup_steps=5)


# ------------------------------------------------------------- torch parity

def _torch_adam_numpy(p, grads, lrs, *, b1, b2, eps, wd, decoupled):
  """Line-by-line numpy transcription of torch.optim.AdamW / Adam."""
  p = p.astype(np.float64).copy()
  m = np.zeros_like(p)
  v = np.zeros_like(p)
  for t, (g, lr) in enumerate(zip(grads, lrs), start=1):
    g = g.astype(np.float64)
    if decoupled:
      p = p * (1 - lr * wd)           # AdamW: param.mul_(1 - lr * wd)
    elif wd:
      g = g + wd * p                  # Adam: grad.add(param, alpha=wd)
    m = b1 * m + (1 - b1) * g         # exp_avg.lerp_(grad, 1 - beta1)
    v = b2 * v + (1 - b2) * g * g     # exp_avg_sq.mul_(b2).addcmul_(...)
    bc1 = 1 - b1 ** t
    bc2 = 1 - b2 ** t
    denom = np.sqrt(v) / math.sqrt(bc2) + eps
    p = p - (lr / bc1) * m / denom    # param.addcdiv_(m, denom, -lr/bc1)
  return p


@pytest.mark.parametrize("name,decoupled", [("adamw", True), ("adam", False)])
@pytest.mark.parametrize("schedule", ["constant", "cosine_epoch"])
def test_matches_torch_transcription(name, decoupled, schedule):
  rng = np.random.default_rng(0)
  p0 = rng.standard_normal((3, 4)).astype(np.float32)
  grads = [rng.standard_normal((3, 4)).astype(np.float32) for _ in range(3)]
  lr, wd = 0.05, 0.1
  sched = dict(name=schedule) if schedule == "constant" else dict(
      name=schedule, epochs=3)
  cfg = _cfg(name=name, lr=lr, weight_decay=wd, b1=0.8, b2=0.95, eps=1e-6,
             schedule=sched)
  # One step per epoch: torch's CosineAnnealingLR(T_max=3) lr for the t-th
  # optimiser step is lr * 1/2 (1 + cos(pi * (t - 1) / 3)).
  lrs = ([lr] * 3 if schedule == "constant" else
         [lr * 0.5 * (1 + math.cos(math.pi * e / 3)) for e in range(3)])
  st = _run(cfg, {"w": jnp.asarray(p0)},
            [{"w": jnp.asarray(g)} for g in grads], spe=1)
  want = _torch_adam_numpy(p0, grads, lrs, b1=0.8, b2=0.95, eps=1e-6, wd=wd,
                           decoupled=decoupled)
  np.testing.assert_allclose(np.asarray(st.params["w"]), want, rtol=2e-5,
                             atol=1e-6)
  assert int(st.step) == 3


# ------------------------------------------------- groups, freeze and decay

def test_param_groups_apply_their_own_lr():
  params = {"ctr": {"w": jnp.ones(2)}, "plm": {"w": jnp.ones(2)},
            "plm_head": {"w": jnp.ones(2)}}
  grads = {k: {"w": jnp.array([1.0, -2.0])} for k in params}
  # First match wins: plm/w takes 1e-2 although r"plm" also matches it.
  cfg = _cfg(lr=1e-3, eps=1e-12,
             param_groups=[(r"^plm/", 1e-2), (r"plm", 5e-2, "heads")])
  st = _run(cfg, params, [grads])
  sign = np.array([-1.0, 1.0])
  np.testing.assert_allclose(st.params["ctr"]["w"] - 1, 1e-3 * sign,
                             rtol=1e-3)
  np.testing.assert_allclose(st.params["plm"]["w"] - 1, 1e-2 * sign,
                             rtol=1e-3)
  np.testing.assert_allclose(st.params["plm_head"]["w"] - 1, 5e-2 * sign,
                             rtol=1e-3)
  labels = optim.param_labels(cfg, params)
  assert labels == {"ctr": {"w": "default"}, "plm": {"w": "group_0"},
                    "plm_head": {"w": "heads"}}
  cfg.schedule = mlc.ConfigDict(dict(name="cosine_epoch", epochs=2))
  lrs = optim.current_lrs(cfg, 10, steps_per_epoch=10, total_steps=20)
  assert lrs == pytest.approx({"train/lr": 5e-4, "train/lr_group_0": 5e-3,
                               "train/lr_heads": 2.5e-2})


def test_freeze_zero_updates_no_state_and_clip_ignores_frozen():
  params = {"ctr": {"emb": jnp.ones((3,)), "w": jnp.ones((2,))}}
  # eps >> |g| makes the Adam step proportional to g, exposing the clip.
  cfg = _cfg(name="adam", lr=1.0, eps=1e3, weight_decay=0.5,
             freeze=[r"^ctr/emb$"], grad_clip=1.0)
  g_small = {"ctr": {"emb": jnp.full((3,), 100.0), "w": jnp.array([.3, .4])}}
  st = _run(cfg, params, [g_small, g_small])
  np.testing.assert_array_equal(st.params["ctr"]["emb"], 1.0)
  assert not [p for p in optim.param_paths(st.opt_state) if "emb" in p]
  # Frozen grads do not count in the global norm: |g_w| = 0.5 < 1, unclipped.
  st1 = _run(cfg, params, [g_small])
  g = np.array([.3, .4]) + 0.5 * 1.0  # Adam's L2 term wd * p
  np.testing.assert_allclose(st1.params["ctr"]["w"], 1 - g / (g + 1e3),
                             rtol=1e-4)
  # A trainable norm above the clip is scaled to norm 1 (before L2 decay).
  g_big = {"ctr": {"emb": jnp.zeros((3,)), "w": jnp.array([3.0, 4.0])}}
  st2 = _run(cfg, params, [g_big])
  g = np.array([.6, .8]) + 0.5
  np.testing.assert_allclose(st2.params["ctr"]["w"], 1 - g / (g + 1e3),
                             rtol=1e-4)
  assert optim.summarize_labels(cfg, params) == {"frozen": 3, "default": 2}


def _decay_params():
  return {"enc": {"Dense_0": {"kernel": jnp.ones((2, 2)),
                              "bias": jnp.ones((2,))},
                  "LayerNorm_0": {"scale": jnp.ones((2,)),
                                  "bias": jnp.ones((2,))},
                  "ln_f": {"scale": jnp.ones((2,))}},
          "emb": {"embedding": jnp.ones((4, 2))}}


@pytest.mark.parametrize("name", ["adamw", "adam"])
def test_decay_mask(name):
  params = _decay_params()
  zeros = jax.tree.map(jnp.zeros_like, params)
  kw = dict(name=name, lr=0.1, weight_decay=0.5,
            param_groups=[(r"Dense_0/kernel", 0.2)])
  st_all = _run(_cfg(decay_mask="all", **kw), params, [zeros])
  st_nbn = _run(_cfg(decay_mask="no_bias_norm", **kw), params, [zeros])
  decayed = (lambda lr: 1 - lr * 0.5) if name == "adamw" else (
      lambda lr: 1 - lr)  # adam: zero grad + L2 -> Adam step of size lr
  got_all = optim.param_paths(st_all.params)
  got_nbn = optim.param_paths(st_nbn.params)
  for path in got_all:
    lr = 0.2 if path.endswith("Dense_0/kernel") else 0.1
    np.testing.assert_allclose(got_all[path], decayed(lr), rtol=1e-5,
                               err_msg=path)
    takes_decay = path in ("enc/Dense_0/kernel", "emb/embedding")
    np.testing.assert_allclose(got_nbn[path],
                               decayed(lr) if takes_decay else 1.0,
                               rtol=1e-5, err_msg=path)


def test_param_paths():
  tree = {"a": {"b": jnp.ones(1), "c": [jnp.ones(2), jnp.ones(3)]}}
  assert list(optim.param_paths(tree)) == ["a/b", "a/c/0", "a/c/1"]


def test_config_errors():
  params = {"ctr": {"w": jnp.ones(2)}}
  with pytest.raises(ValueError, match="optim.name 'sgd' unknown"):
    optim.build_optimizer(_cfg(name="sgd"), steps_per_epoch=1,
                          total_steps=1)
  with pytest.raises(ValueError, match="decay_mask 'some' unknown"):
    optim.build_optimizer(_cfg(decay_mask="some"), steps_per_epoch=1,
                          total_steps=1)
  with pytest.raises(ValueError, match=r"freeze regex '\^plm/' matches no"):
    optim.build_optimizer(_cfg(freeze=["^plm/"]), steps_per_epoch=1,
                          total_steps=1).init(params)
  with pytest.raises(ValueError, match="group_0 regex '\\^plm/' matches no"):
    optim.build_optimizer(_cfg(param_groups=[("^plm/", 1.0)]),
                          steps_per_epoch=1, total_steps=1).init(params)
  with pytest.raises(ValueError, match=r"param_groups\[0\].*expected"):
    optim.build_optimizer(_cfg(param_groups=[("^ctr/",)]),
                          steps_per_epoch=1, total_steps=1)
  with pytest.raises(ValueError, match="bad regex"):
    optim.build_optimizer(_cfg(param_groups=[("(", 1.0)]),
                          steps_per_epoch=1, total_steps=1)
  with pytest.raises(ValueError, match="grad_clip must be None or > 0"):
    optim.build_optimizer(_cfg(grad_clip=0.0), steps_per_epoch=1,
                          total_steps=1)


def test_optimizer_is_optax_transform():
  tx = optim.build_optimizer(_cfg(), steps_per_epoch=1, total_steps=1)
  assert isinstance(tx, optax.GradientTransformation)


def test_train_state_rng_and_step():
  params = {"w": jnp.ones(2)}
  tx = optim.build_optimizer(_cfg(), steps_per_epoch=1, total_steps=1)
  typed = state_lib.create_train_state(params, tx, jax.random.key(3))
  raw = state_lib.create_train_state(params, tx, jax.random.PRNGKey(3))
  assert typed.rng.dtype == jnp.uint32 and typed.step.dtype == jnp.int32
  np.testing.assert_array_equal(typed.rng, raw.rng)
  with pytest.raises(TypeError, match="uint32 key data"):
    state_lib.create_train_state(params, tx, jnp.zeros(2, jnp.float32))
  k0 = jax.random.key_data(state_lib.step_key(typed))
  nxt = typed.apply_gradients({"w": jnp.ones(2)})
  assert int(nxt.step) == 1
  np.testing.assert_array_equal(nxt.rng, typed.rng)  # base key unchanged
  k1 = jax.random.key_data(state_lib.step_key(nxt))
  assert not np.array_equal(k0, k1)
  np.testing.assert_array_equal(
      k1, jax.random.key_data(jax.random.fold_in(jax.random.key(3), 1)))


def test_linear_schedule_and_warmup_ratio():
  """'linear' (transformers' schedule) and warmup given as a fraction."""
  import ml_collections as mlc  # pylint: disable=g-import-not-at-top
  lin = optim.make_schedule(mlc.ConfigDict({"name": "linear",
                                            "warmup_steps": 0.1}),
                            base_lr=2.0, steps_per_epoch=10, total_steps=100)
  # 10 warm-up steps (10% of 100), peak 2.0, then linear to 0 at step 100.
  np.testing.assert_allclose([float(lin(s)) for s in (0, 5, 10, 55, 100)],
                             [0.0, 1.0, 2.0, 1.0, 0.0], atol=1e-6)
  same = optim.make_schedule(mlc.ConfigDict({"name": "cosine",
                                             "warmup_steps": 10}),
                             base_lr=2.0, steps_per_epoch=10, total_steps=100)
  ratio = optim.make_schedule(mlc.ConfigDict({"name": "cosine",
                                              "warmup_steps": 0.1}),
                              base_lr=2.0, steps_per_epoch=10, total_steps=100)
  for s in (0, 7, 10, 60, 99):
    assert float(same(s)) == float(ratio(s))
  with pytest.raises(ValueError, match="fraction"):
    optim.make_schedule(mlc.ConfigDict({"name": "linear",
                                        "warmup_steps": 2.5}),
                        base_lr=1.0, steps_per_epoch=1, total_steps=10)
