"""jaxalign: does on-policy distillation push a student toward correct answers or away from them?"""

__version__ = "0.1.0"
