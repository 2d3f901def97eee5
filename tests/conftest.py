import os

# Tests run on CPU; exact float32 parity needs full-precision matmuls.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

# Dry runs price with throughputs measured on the device (jaxalign.calibrate). A fresh calibration of
# the Qwen3 shapes takes minutes on a CPU, so tests use a recorded one: a copy, since a dry run adds
# any shape it lacks to its file.
if "JAXALIGN_CALIBRATION" not in os.environ:
    import shutil
    import tempfile
    from pathlib import Path

    _recorded = Path(__file__).resolve().parent / "fixtures" / "calibration_cpu.json"
    os.environ["JAXALIGN_CALIBRATION"] = str(shutil.copy(_recorded, Path(tempfile.mkdtemp()) / "calibration.json"))
