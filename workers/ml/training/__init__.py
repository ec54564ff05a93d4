"""Fine-tuning an embedding model, split as sentence-transformers splits its trainer.

* :mod:`.data` — training rows (pairs, triplets, hard negatives) and evaluation data, checked;
* :mod:`.trainer` — the run with sentence-transformers' trainer: checkpoints, resume, stop;
* :mod:`.card` — the model card written next to the result;
* :mod:`.child` — the child-process entry point the worker supervises
  (``python -m workers.ml.training.child SPEC.json``).

The run's config (:class:`workers.common.configs.training.TrainConfig`) and its estimate before
launch (:mod:`workers.common.estimate`) live in ``workers.common``: the web builds and shows them
too, without loading this package.

Every module imports torch, transformers, peft and sentence-transformers inside the functions
that need them, so importing any of them is cheap.
"""
