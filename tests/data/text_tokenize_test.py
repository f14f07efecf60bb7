"""Template rendering, value spans and tokenisation (WordPiece and BPE)."""
import numpy as np
import pytest
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, processors, trainers
import transformers

from flip_jax.data import rawparse
from flip_jax.data import textify
from flip_jax.data import tokenize as tokenize_lib

NAMES = ("User ID", "Gender", "Title", "Film genre")
VALUES = [
    ("1", "female", "One Flew Over the Cuckoo's Nest (1975)", "Drama"),
    ("22", "male", "Misérables, Les (1995)", "Musical"),
    ("333", "female", "Mr. Smith Goes.. (1939)", "Comedy"),
    ("4444", "male", "  Tab\tand  spaces ", "Film-Noir"),
]


def _columns(values):
  return [rawparse.obj(v[f] for v in values) for f in range(len(NAMES))]


def test_render_exact_text_and_spans():
  text, spans = textify.render(NAMES, _columns(VALUES))
  assert text[0] == ("User ID is 1. Gender is female. Title is One Flew Over "
                     "the Cuckoo's Nest (1975). Film genre is Drama.")
  assert text[3] == ("User ID is 4444. Gender is male. Title is Tab and "
                     "spaces. Film genre is Film-Noir.")
  for r, row in enumerate(VALUES):
    single, single_spans = textify.render_row(NAMES, row)
    assert single == text[r]
    np.testing.assert_array_equal(single_spans, spans[r])
    for f, (a, b) in enumerate(spans[r]):
      assert text[r][a:b] == textify.clean_value(row[f])
  assert textify.highlight(text[1], spans[1]).startswith(
      "User ID is [22]. Gender is [male]. Title is [Misérables, Les (1995)]")


@pytest.fixture(scope="module")
def bert():
  return tokenize_lib.load_tokenizer("minilm-l6")


@pytest.fixture(scope="module")
def roberta():
  """A tiny byte-level BPE tokenizer with RoBERTa specials (pad id 1)."""
  texts, _ = textify.render(NAMES, _columns(VALUES * 3))
  tok = tokenizers.Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
      vocab_size=300, special_tokens=["<s>", "<pad>", "</s>", "<unk>",
                                      "<mask>"],
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator(list(texts), trainer)
  tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
  return transformers.PreTrainedTokenizerFast(
      tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
      pad_token="<pad>", mask_token="<mask>", unk_token="<unk>")


def _norm(tok, s):
  normalizer = tok.backend_tokenizer.normalizer
  s = normalizer.normalize_str(s) if normalizer else s
  return "".join(s.split())


@pytest.mark.parametrize("which", ["bert", "roberta"])
def test_token_fields_decode_to_values(which, request):
  tok = request.getfixturevalue(which)
  text, spans = textify.render(NAMES, _columns(VALUES))
  cols, stats = tokenize_lib.tokenize_texts(tok, text, spans, 64)
  slow, _ = tokenize_lib.tokenize_texts(tok, text, spans, 64, force_slow=True)
  assert stats["tokenize_path"] == "clauses"
  for k in cols:
    np.testing.assert_array_equal(cols[k], slow[k])
  assert stats["truncated_rows"] == 0
  for r in range(len(text)):
    ids, tf = cols["input_ids"][r], cols["token_field"][r]
    n = int(cols["attention_mask"][r].sum())
    full = tok(text[r])["input_ids"]
    assert ids[:n].tolist() == full  # specials included, same as HF
    assert (ids[n:] == tok.pad_token_id).all()
    assert (tf[n:] == -1).all() and tf[0] == -1 and tf[n - 1] == -1
    for f, (a, b) in enumerate(spans[r]):
      got, want = _norm(tok, tok.decode(ids[tf == f].tolist())), _norm(
          tok, text[r][a:b])
      # Byte-level BPE may merge the value's last characters with the
      # clause's period (')' + '.' -> ').'); such a token belongs to the
      # value, so the decoded tokens are the value plus at most that '.'.
      assert got in (want, want + "."), (which, r, f, got, want)
      if which == "bert":
        assert got == want


@pytest.mark.parametrize("which", ["bert", "roberta"])
def test_truncation_never_half_marks_a_field(which, request):
  tok = request.getfixturevalue(which)
  text, spans = textify.render(NAMES, _columns(VALUES))
  full, _ = tokenize_lib.tokenize_texts(tok, text, spans, 128)
  n_full = full["attention_mask"].sum(1)
  title = NAMES.index("Title")
  # Cut inside the title of row 0: keep the title's first token only.
  first_title = int(np.flatnonzero(full["token_field"][0] == title)[0])
  length = first_title + 2  # the kept content + the final special
  cols, stats = tokenize_lib.tokenize_texts(tok, text, spans, length)
  assert stats["truncated_rows"] == int((n_full > length).sum())
  assert stats["truncated_fields"] >= 1
  tf, ids = cols["token_field"][0], cols["input_ids"][0]
  assert cols["attention_mask"][0].all()
  assert ids[-1] == full["input_ids"][0][n_full[0] - 1]  # [SEP] / </s>
  assert ids[first_title] == full["input_ids"][0][first_title]
  assert tf[first_title] == -1  # the cut title is not maskable
  assert (tf[:first_title] == full["token_field"][0][:first_title]).all()
  assert title not in tf and NAMES.index("Film genre") not in tf


def test_load_tokenizer_errors(tmp_path):
  with pytest.raises(ValueError, match="not a known name"):
    tokenize_lib.load_tokenizer(str(tmp_path / "nope"))
