"""Main entry point: ``python -m jaxalign.run [overrides]``.

Placeholder until the embedded toy default (tiny trained student and teacher) and the Phase 1/2
pipeline land: for now it checks the installation and says what is available.
"""

import logging
import sys

import jax

import jaxalign

log = logging.getLogger("jaxalign.run")


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    log.info("jaxalign %s on jax %s, devices: %s", jaxalign.__version__, jax.__version__, jax.devices())
    if argv:
        log.error("overrides %s given, but the Hydra pipeline is not built yet", argv)
        return 2
    log.warning(
        "PLACEHOLDER: the embedded toy default (student/teacher on toy_arith) and the Phase 1/2 "
        "pipeline are not built yet. Available now: jaxalign.models.load_qwen3 (Qwen3 in JAX)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
