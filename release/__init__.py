"""Release tooling, outside the runtime package ``msc``: the model card written from measured files
(``python -m release.card``; the world model's: ``python -m release.world_card``) and the example clips in ``assets/`` (``python -m release.assets``)."""
