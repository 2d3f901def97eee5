"""Error types that name the bad input and the fix. Raised before any expensive work."""


class JaxalignError(ValueError):
    """Base class: a user-facing problem with an input, a config or a file."""


class CheckpointError(JaxalignError):
    """A model directory, config.json or safetensors file that jaxalign cannot use."""


class ConfigError(JaxalignError):
    """An invalid configuration value or combination."""


class TokenizerError(JaxalignError):
    """A tokenizer or chat template that does not fit its model or its partner model."""


class IncompleteResults(JaxalignError):
    """A run directory whose result files are missing, damaged or not finished yet."""


def run_cli(main, prog: str) -> None:
    """Runs a module's ``main()`` as a command: a JaxalignError is one line on stderr, exit status 2."""
    import sys

    try:
        main()
    except JaxalignError as err:
        print(f"{prog}: {err}", file=sys.stderr)
        raise SystemExit(2) from err
