"""flip_jax.data: raw datasets -> FLIP samples -> grain batches.

  rawio.py      RawTable, file discovery, strict/tolerant parsers, DataError
  movielens.py  ML-1M and ML-100K readers (8 fields, decoded text values)
  books.py      BookCrossing and GoodReads readers
  sources.py    READERS registry, generic CSV/parquet reader
  synthetic.py  MovieLens-like generator writing the raw ML-1M format
  features.py   FeatureMap: per-field vocabularies, OOV/MASK ids, counts
  textify.py    "<Field> is <value>." text + value character spans
  tokenize.py   load_tokenizer, tokenize_texts (token_field per token)
  cache.py      fingerprinted, atomically published columnar cache
  prepare.py    load_dataset / tokenize_dataset (labels, order, splits)
  masking.py    seeded MLM / MTM masks
  pipeline.py   train_iterator (grain, checkpointable) / eval_batches
"""
