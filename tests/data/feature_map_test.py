"""FeatureMap: reserved ids, offsets, OOV, counts and JSON round trip."""
import json

import numpy as np
import pytest

from flip_jax.data import features
from flip_jax.data import rawparse


def _fm():
  keys = [rawparse.obj(["b", "a", "b", "c"]), rawparse.obj(["x", "x", "y", "x"])]
  return features.FeatureMap.build(["f1", "f2"], ["Field one", "Field two"],
                                   keys, meta={"row_order": "test"})


def test_offsets_reserved_and_counts():
  fm = _fm()
  assert fm.vocab_sizes.tolist() == [5, 4]  # 3 + 2 reserved, 2 + 2
  assert fm.offsets.tolist() == [0, 5]
  assert fm.num_features == 9
  assert fm.oov_ids().tolist() == [0, 5]
  assert fm.mask_ids().tolist() == [1, 6]
  # sorted vocab: a=2, b=3, c=4 | x=7, y=8; reserved ids count 0
  assert fm.counts.tolist() == [0, 0, 1, 2, 1, 0, 0, 3, 1]
  ids = fm.encode([rawparse.obj(["a", "c", "zzz"]), rawparse.obj(["y", "new", "x"])])
  assert ids.dtype == np.int32
  assert ids.tolist() == [[2, 8], [4, 5], [0, 7]]  # unseen -> field's OOV
  assert fm.decode(ids)[1] == ["c", "<oov>"]
  assert fm.is_reserved(np.array([0, 1, 2, 5, 6, 7])).tolist() == [
      True, True, False, True, True, False]


def test_json_round_trip_and_hash(tmp_path):
  fm = _fm()
  fm.save(str(tmp_path))
  d = json.loads((tmp_path / "feature_map.json").read_text())
  assert d["fields"][1] == {"name": "f2", "display_name": "Field two",
                            "vocab_size": 4, "offset": 5, "oov_id": 5,
                            "mask_id": 6, "values": ["x", "y"]}
  assert d["reserved_local_ids"] == {"oov": 0, "mask": 1}
  assert d["row_order"] == "test"
  assert d["counts_sha256"] == features.counts_hash(fm.counts)
  back = features.FeatureMap.load(str(tmp_path / "feature_map.json"))
  np.testing.assert_array_equal(back.counts, fm.counts)
  np.testing.assert_array_equal(back.offsets, fm.offsets)
  assert back.encode([rawparse.obj(["b"]), rawparse.obj(["y"])]).tolist() == [[3, 8]]
  d["counts"][3] += 1
  (tmp_path / "bad.json").write_text(json.dumps(d))
  with pytest.raises(ValueError, match="counts_sha256"):
    features.FeatureMap.load(str(tmp_path / "bad.json"))
