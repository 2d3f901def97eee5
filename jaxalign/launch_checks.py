"""Checks that run on the submitting machine before a multirun launches any job."""

from __future__ import annotations

import sys
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from jaxalign import config as C
from jaxalign.errors import ConfigError


class LaunchChecks(Callback):
    """Fails a sweep before submission: a SLURM launcher without a partition, or a bad job config."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Hydra turns a callback's exceptions into warnings and launches anyway; SystemExit gets through.
        try:
            self._check(config)
        except ConfigError as err:
            print(f"configuration error, nothing submitted: {err}", file=sys.stderr)
            raise SystemExit(2) from err

    @staticmethod
    def _check(config: DictConfig) -> None:
        launcher = config.hydra.launcher
        if str(launcher.get("_target_", "")).endswith("SlurmLauncher") and not launcher.get("partition"):
            raise ConfigError("hydra.launcher.partition: required with hydra/launcher=slurm; "
                              "pass hydra.launcher.partition=NAME (sinfo lists them)")
        job = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
        C.validate(C.from_omegaconf(job), check_models=False)  # the swept models are not composed here
