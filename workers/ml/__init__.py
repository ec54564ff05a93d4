"""Pure ML code over paths, configs and arrays.

Never imports Django; heavy libraries load lazily inside functions."""
