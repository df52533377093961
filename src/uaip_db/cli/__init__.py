"""The only layer that prints or reads the terminal: what `inv` tasks and nox sessions run."""
