"""grain pipeline: epochs, process sharding, exact resume, eval padding."""
import numpy as np
import pytest

from flip_jax.data import features
from flip_jax.data import masking
from flip_jax.data import pipeline
from flip_jax.data import rawparse

N, F, L = 103, 3, 12


@pytest.fixture(scope="module")
def data():
  rng = np.random.default_rng(0)
  keys = [rawparse.obj([f"v{x}" for x in rng.integers(0, 5, N)])
          for _ in range(F)]
  fm = features.FeatureMap.build(["a", "b", "c"], ["A", "B", "C"], keys)
  tf = np.full((N, L), -1, np.int8)
  tf[:, 2:4], tf[:, 5:6], tf[:, 8:10] = 0, 1, 2
  am = np.zeros((N, L), np.int8)
  am[:, :11] = 1
  cols = {"ids": fm.encode(keys), "label": (np.arange(N) % 2).astype(
      np.float32), "row_id": np.arange(N, dtype=np.int32),
          "input_ids": rng.integers(1000, 2000, (N, L)).astype(np.int32),
          "attention_mask": am, "token_field": tf}
  return cols, fm


def _take(it, k):
  return [next(it) for _ in range(k)]


def test_epochs_cover_rows_and_reshuffle(data):
  cols, _ = data
  it = pipeline.train_iterator(cols, global_batch_size=10, seed=3,
                               num_epochs=2, process_index=0, process_count=1)
  batches = list(it)
  assert len(batches) == 2 * pipeline.steps_per_epoch(N, 10) == 20
  e0 = np.concatenate([b["row_id"] for b in batches[:10]])
  e1 = np.concatenate([b["row_id"] for b in batches[10:]])
  assert len(set(e0.tolist())) == 100 and len(set(e1.tolist())) == 100
  assert not np.array_equal(e0, e1)
  b = batches[0]
  assert b["ids"].dtype == np.int32 and b["label"].dtype == np.float32
  assert b["input_ids"].dtype == np.int32 and b["weight"].tolist() == [1] * 10
  np.testing.assert_array_equal(b["ids"], cols["ids"][b["row_id"]])
  np.testing.assert_array_equal(b["token_field"], cols["token_field"][
      b["row_id"]])


def test_process_shards_form_the_global_batch(data):
  cols, _ = data
  whole = _take(pipeline.train_iterator(
      cols, global_batch_size=12, seed=5, process_index=0, process_count=1), 9)
  parts = [_take(pipeline.train_iterator(
      cols, global_batch_size=12, seed=5, process_index=p, process_count=3), 9)
           for p in range(3)]
  for s in range(9):
    assert all(len(parts[p][s]["row_id"]) == 4 for p in range(3))
    joined = np.concatenate([parts[p][s]["row_id"] for p in range(3)])
    np.testing.assert_array_equal(joined, whole[s]["row_id"])
  with pytest.raises(ValueError, match="divisible"):
    pipeline.train_iterator(cols, global_batch_size=10, seed=0,
                            process_index=0, process_count=3)


@pytest.mark.parametrize("workers", [0, 1])
def test_state_restore_is_exact(data, workers):
  cols, fm = data
  kw = dict(global_batch_size=8, seed=11, transform=masking.masking_transform(
      masking.MaskingConfig(text_mask_ratio=.34, ctr_mask_ratio=.34),
      mask_token_id=7, feature_map=fm), process_index=0, process_count=1,
            worker_count=workers)
  it = pipeline.train_iterator(cols, **kw)
  _take(it, 15)  # crosses the epoch boundary (12 steps per epoch)
  state = it.get_state()
  want = _take(it, 6)
  fresh = pipeline.train_iterator(cols, **kw)
  fresh.set_state(state)
  got = _take(fresh, 6)
  it.close()
  fresh.close()
  for w, g in zip(want, got):
    assert sorted(w) == sorted(g)
    for k in w:
      np.testing.assert_array_equal(w[k], g[k], err_msg=k)
  assert {"mlm_input_ids", "mlm_labels", "mtm_ids", "mtm_positions",
          "mtm_labels", "mtm_weight"} <= set(want[0])


def test_masks_are_per_example_not_per_batch(data):
  cols, fm = data
  m = masking.MaskingConfig(text_mask_ratio=.34, ctr_mask_ratio=.34)
  a = pipeline.train_iterator(cols, global_batch_size=10, seed=1,
                              transform=masking.masking_transform(
                                  m, mask_token_id=7, feature_map=fm),
                              process_index=0, process_count=1)
  b = pipeline.train_iterator(cols, global_batch_size=20, seed=1,
                              transform=masking.masking_transform(
                                  m, mask_token_id=7, feature_map=fm),
                              process_index=0, process_count=1)
  x, y = next(a), next(b)
  # Same epoch permutation: a's first batch is the first half of b's.
  np.testing.assert_array_equal(x["row_id"], y["row_id"][:10])
  for k in ("mlm_input_ids", "mlm_labels", "mtm_ids", "mtm_positions"):
    np.testing.assert_array_equal(x[k], y[k][:10], err_msg=k)


@pytest.mark.parametrize("procs", [1, 2])
def test_eval_batches_cover_in_order_with_padding(data, procs):
  cols, _ = data
  per = [list(pipeline.eval_batches(cols, global_batch_size=20,
                                    process_index=p, process_count=procs))
         for p in range(procs)]
  assert len({len(b) for b in per}) == 1 and len(per[0]) == 6
  ids = []
  for s in range(6):
    for p in range(procs):
      b = per[p][s]
      assert len(b["row_id"]) == 20 // procs
      real = b["weight"] > 0
      assert (b["row_id"][~real] == -1).all()
      assert (b["weight"][real] == 1).all()
      ids += b["row_id"][real].tolist()
  assert ids == list(range(N))
  last = per[-1][-1]
  assert (last["attention_mask"][last["weight"] == 0].sum(1) > 0).all()


def test_orbax_checkpoint_of_the_iterator(data, tmp_path):
  """The lead's path: grain's orbax handler saves/restores the iterator."""
  import grain  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  cols, fm = data
  kw = dict(global_batch_size=8, seed=2,
            transform=masking.masking_transform(
                masking.MaskingConfig(), mask_token_id=7, feature_map=fm),
            process_index=0,
            process_count=1)
  it = pipeline.train_iterator(cols, **kw)
  _take(it, 5)
  mngr = ocp.CheckpointManager(
      str(tmp_path / "ckpt"),
      item_handlers={"data_iter": grain.checkpoint.CheckpointHandler()})
  mngr.save(5, args=ocp.args.Composite(
      data_iter=grain.checkpoint.CheckpointSave(it)))
  mngr.wait_until_finished()
  want = _take(it, 3)
  fresh = pipeline.train_iterator(cols, **kw)
  mngr.restore(5, args=ocp.args.Composite(
      data_iter=grain.checkpoint.CheckpointRestore(fresh)))
  for w, g in zip(want, _take(fresh, 3)):
    for k in w:
      np.testing.assert_array_equal(w[k], g[k], err_msg=k)


def test_memmap_columns_pickle_by_file_and_slices_by_value(tmp_path):
  import pickle  # pylint: disable=g-import-not-at-top
  np.save(tmp_path / "a.npy", np.arange(40, dtype=np.int32).reshape(20, 2))
  whole = np.load(tmp_path / "a.npy", mmap_mode="r")
  cols = {"ids": whole, "label": np.zeros(20, np.float32),
          "row_id": np.arange(20, dtype=np.int32)}
  columns_cls = getattr(pipeline, "_Columns")
  state = columns_cls(cols).__getstate__()
  assert state["state"]["ids"][0] == "mmap"
  part = {k: v[5:15] for k, v in cols.items()}
  back = pickle.loads(pickle.dumps(columns_cls(part)))
  np.testing.assert_array_equal(back.arrays["ids"], whole[5:15])
