"""What the web and the workers both need and that loads no ML library and no Django: metric
names, reading a model folder's metadata, atomic file writes. ``apps`` may import it (it never
imports ``workers.ml``); it imports neither (import-linter contracts in ``bin/test``)."""
