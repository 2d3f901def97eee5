"""Context screening: ``python -m jaxalign.screen [group=option ...] [key=value ...]``.

Pass rates of the student with each self-distillation context against its plain prompt (G =
``screening.rollouts`` at temperature 1), difficulty bins, the paper's Tables 7-9, and the list of
questions the main run analyses (``questions.json``, for ``dataset.questions_file=``). The
screening directory sits next to the run directories of the same dataset and student:
``outputs/<dataset>/<student>/screening/<teachers>/<budget>/seed<seed>/``. A rerun resumes.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from jaxalign import config as C
from jaxalign.errors import ConfigError
from jaxalign.pipeline import Preempted
from jaxalign.pipeline.jobs import screen
from jaxalign.preemption import StopRequest

log = logging.getLogger("jaxalign.screen")
C.register_schema()


def execute(dcfg: DictConfig, out_dir: Path) -> dict:
    cfg = C.from_omegaconf(dcfg)
    C.validate(cfg)
    if cfg.dataset.questions_file is not None:
        raise ConfigError("dataset.questions_file: screening picks its own questions (num_questions, seed); "
                          "remove the setting")
    out_dir.mkdir(parents=True, exist_ok=True)
    stop = StopRequest()
    try:
        result = screen(cfg, out_dir, stop)
    except Preempted as stopped:
        log.warning("%s; the same command resumes", stopped)
        stop.forward()
        return {}
    finally:
        stop.restore()
    log.info("screened %d questions, %d analysed; results in %s", result["screened"], result["analysed"], out_dir)
    print(result["markdown"])
    return result


@hydra.main(config_path="../conf", config_name="screen", version_base=None)
def main(dcfg: DictConfig) -> None:
    try:
        execute(dcfg, Path(HydraConfig.get().runtime.output_dir))
    except ConfigError as err:
        log.error("configuration error: %s", err)
        raise SystemExit(2) from err


if __name__ == "__main__":
    main()
