"""CLIP's stub-side code: what ``clip_preprocess`` (``preprocess``) and ``clip_tokenize``
(``tokenizer``) run inside Triton, and the names every layer shares (``names``)."""
