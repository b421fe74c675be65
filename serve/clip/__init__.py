"""CLIP's stub-side code: what ``clip_preprocess`` (``preprocess``) and ``clip_tokenize``
(``tokenizer``; ``hf_tokenizer`` for Hugging Face tokenizers) run inside Triton, and the
names every layer shares (``names``)."""
