"""CTR-BERT's tower texts: exactly the user's / the item's tokens.

* Each tower's ids are the tokenizer's own encoding of that side's clauses
  (built here independently from the values), [CLS] ... [SEP] included, and
  its attention mask covers exactly those tokens.
* Every value token of the prompt is in its side's tower with the same id,
  and in no other (the towers select exactly the user / item tokens).
* A tower longer than its length is cut like the tokenizer cuts it.
* Unknown or all-covering user fields are clear errors (library and
  config_errors); cut_to_longest drops padding only.
"""
import numpy as np
import pytest

from flip_jax.data import movielens
from flip_jax.data import textify
from flip_jax.data import tokenize as tokenize_lib
from flip_jax.methods.baselines import ctr_bert
from flip_jax.methods.baselines import towers

from tests.methods.baselines import bl_testlib  # pylint: disable=g-bad-import-order

USER = ("user_id", "gender", "age", "occupation", "zipcode")
ROWS = [
    ("4", "female", "35-44", "scientist", "89046", "14",
     "House Love (1956)", "Comedy"),
    ("1207", "male", "under 18", "K-12 student", "02139-4307", "3",
     "Dr. Strangelove, or: How I Learned to Stop Worrying (1964)",
     "Sci-Fi|War"),
    ("77", "male", "56+", "retired", "unknown", "2999",
     "Shawshank Redemption, The (1994)", "Drama"),
]


@pytest.fixture(scope="module")
def tokenizer(tiny_bert_dir):
  return tokenize_lib.load_tokenizer(str(tiny_bert_dir))


def _prompts():
  names = movielens.DISPLAY_NAMES
  cols = [np.asarray([r[f] for r in ROWS], object) for f in range(len(names))]
  return textify.render(names, cols)


def _clauses(row, fields):
  """The side text, written out from the values (not from towers)."""
  return " ".join(textify.CLAUSE.format(name=movielens.DISPLAY_NAMES[f],
                                        value=row[f]) for f in fields)


def test_towers_hold_exactly_their_sides_tokens(tokenizer):
  texts, spans = _prompts()
  by_side = towers.side_fields(movielens.FIELD_NAMES, USER)
  assert by_side == {"user": (0, 1, 2, 3, 4), "item": (5, 6, 7)}
  cols, stats = towers.tower_columns(tokenizer, texts, spans, by_side, 64)
  assert stats["user"]["truncated_rows"] == 0
  assert stats["item"]["truncated_rows"] == 0
  prompt, _ = tokenize_lib.tokenize_texts(tokenizer, texts, spans, 100)
  for r, row in enumerate(ROWS):
    for side, fields in by_side.items():
      ids = cols[f"{side}_input_ids"][r]
      mask = cols[f"{side}_attention_mask"][r]
      want = tokenizer(_clauses(row, fields))["input_ids"]
      n = int(mask.sum())
      assert ids[:n].tolist() == want
      assert mask[:n].all() and not mask[n:].any()
      # Each value's tokens: the prompt's, with the same ids, in the tower
      # of its side only.
      tf = cols[f"{side}_token_field"][r]
      assert set(tf[tf >= 0].tolist()) == set(range(len(fields)))
      for local, f in enumerate(fields):
        in_prompt = prompt["input_ids"][r][prompt["token_field"][r] == f]
        assert len(in_prompt)
        np.testing.assert_array_equal(ids[tf == local], in_prompt)
    n_user = int(cols["user_attention_mask"][r].sum())
    n_item = int(cols["item_attention_mask"][r].sum())
    # Both towers together: the prompt's tokens plus one more [CLS]/[SEP].
    assert n_user + n_item == int(prompt["attention_mask"][r].sum()) + 2


def test_a_long_tower_is_cut_like_the_tokenizer_cuts(tokenizer):
  texts, spans = _prompts()
  by_side = towers.side_fields(movielens.FIELD_NAMES, USER)
  cols, stats = towers.tower_columns(tokenizer, texts, spans, by_side, 12)
  assert stats["item"]["truncated_rows"] >= 1
  for r, row in enumerate(ROWS):
    want = tokenizer(_clauses(row, by_side["item"]), truncation=True,
                     max_length=12)["input_ids"]
    n = int(cols["item_attention_mask"][r].sum())
    assert cols["item_input_ids"][r][:n].tolist() == want


def test_user_fields_anywhere_in_the_field_order(tokenizer):
  texts, spans = _prompts()
  by_side = towers.side_fields(movielens.FIELD_NAMES, ("title", "user_id"))
  assert by_side == {"user": (0, 6), "item": (1, 2, 3, 4, 5, 7)}
  cols, _ = towers.tower_columns(tokenizer, texts, spans, by_side, 64)
  for r, row in enumerate(ROWS):
    n = int(cols["user_attention_mask"][r].sum())
    assert cols["user_input_ids"][r][:n].tolist() == tokenizer(
        _clauses(row, (0, 6)))["input_ids"]


def test_unknown_or_all_user_fields_are_errors(tiny_bert_dir, bl_cache_dir):
  with pytest.raises(ValueError, match=r"\['nope'\] not fields"):
    towers.side_fields(movielens.FIELD_NAMES, ("user_id", "nope"))
  with pytest.raises(ValueError, match="item tower"):
    towers.side_fields(movielens.FIELD_NAMES, movielens.FIELD_NAMES)
  cfg = bl_testlib.ctr_bert_cfg(tiny_bert_dir, bl_cache_dir,
                                **{"ctr_bert.user_fields": ["user_id", "nope"]})
  errors = ctr_bert.CtrBertTask(cfg).config_errors()
  assert len(errors) == 1 and "'nope'" in errors[0], errors
  cfg.ctr_bert.user_fields = list(movielens.FIELD_NAMES)
  assert "item tower" in ctr_bert.CtrBertTask(cfg).config_errors()[0]
  cfg.ctr_bert.user_fields = ["user_id"]
  cfg.ctr_bert.max_length = 2
  assert ctr_bert.CtrBertTask(cfg).config_errors() == [
      "ctr_bert.max_length=2: expected -1 (data.max_length) or an int >= 3"]


def test_cut_to_longest_drops_padding_only(tokenizer):
  texts, spans = _prompts()
  by_side = towers.side_fields(movielens.FIELD_NAMES, USER)
  cols, _ = towers.tower_columns(tokenizer, texts, spans, by_side, 64)
  cut = towers.cut_to_longest({"a": cols, "b": {k: v[:1] for k, v in
                                                 cols.items()}})
  for side in towers.SIDES:
    longest = int(cols[f"{side}_attention_mask"].sum(1).max())
    for split in cut.values():
      assert split[f"{side}_input_ids"].shape[1] == longest
    np.testing.assert_array_equal(
        cut["a"][f"{side}_input_ids"], cols[f"{side}_input_ids"][:, :longest])
    assert not cols[f"{side}_attention_mask"][:, longest:].any()
