"""Fine-tuning an embedding model, split as sentence-transformers splits its trainer.

* :mod:`.config` — :class:`~.config.TrainConfig`, every knob of a run, and its validation;
* :mod:`.data` — training rows (pairs, triplets, hard negatives) and evaluation data, checked;
* :mod:`.estimate` — memory and step counts before launch, from ``config.json`` alone;
* :mod:`.trainer` — the run with sentence-transformers' trainer: checkpoints, resume, stop;
* :mod:`.card` — the model card written next to the result;
* :mod:`.child` — the child-process entry point the worker supervises
  (``python -m workers.ml.training.child SPEC.json``).

Every module imports torch, transformers, peft and sentence-transformers inside the functions
that need them, so importing any of them is cheap.
"""
