"""Release tooling, outside the runtime package ``msc``: the model card written from measured files
(``python -m release.model_card``) and the example clips in ``assets/`` (``python -m release.assets``)."""
